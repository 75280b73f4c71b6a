"""Goldens for mixtune's DoRA (PEFT's LoraConfig(use_dora=True)): lora/src/test/resources/golden/dora/.

Run: interop/.venv/bin/python interop/make_dora_goldens.py [out_dir]

A tiny Mistral (vocabulary 128) gets a DoRA adapter from peft 0.21 on every linear layer and the lm_head, r 4,
lora_alpha 8, init_lora_weights=False (B random too, so the magnitude starts at ||W + 2 B A|| per output row), then
its magnitudes are moved off that start (x (1 + 0.1 N(0, 1))) so that m / ||W + 2 B A|| is not 1 and every term of
the forward counts. Written: the base checkpoint, the adapter as PEFT saves it, and expected.safetensors with the
logits of the prompt, the gradients of objective = sum(logits * weights) for every adapter tensor (PEFT's keys) and
the weights merge_and_unload leaves in each adapted layer. float32, eager attention, one torch thread, fixed seeds.
See interop/GOLDENS.md.
"""

from __future__ import annotations

import json
import shutil
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

import hf_models as hf

OUT = hf.repo_root() / "lora" / "src" / "test" / "resources" / "golden" / "dora"
SPEC = hf.CheckpointSpec(arch="mistral", seed=7301, sliding_window=8, intermediate_size=96,
                         shape=(("vocab_size", 128),))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
PROMPT = [1, 5, 9, 30, 17, 42, 55, 3, 77, 127, 64, 100, 11, 23]
SEED = 7302


def make(out) -> None:
    torch.set_num_threads(1)
    if out.exists():
        shutil.rmtree(out)
    base_dir = out / "base"
    hf.save_checkpoint(hf.build_model(SPEC), SPEC, base_dir)

    model = hf.load_reference(base_dir)
    base_logits = hf.prompt_forward(model, PROMPT)["logits"]
    model.name_or_path = "../base"
    torch.manual_seed(SEED)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_dora=True,
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_magnitude_vector" in name:
                param.mul_(1 + 0.1 * torch.randn(param.shape, generator=generator))
    adapter_dir = out / "adapter"
    peft_model.save_pretrained(adapter_dir, save_embedding_layers=False)
    (adapter_dir / "README.md").unlink()
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))

    # The adapter as the file holds it, loaded back: what mixtune reads.
    peft_model = hf.load_peft(hf.load_reference(base_dir), adapter_dir)
    for name, param in peft_model.named_parameters():
        param.requires_grad_("lora_" in name)  # from_pretrained loads for inference
    weights = torch.randn(len(PROMPT), SPEC_VOCAB, generator=generator)
    ids = torch.tensor([PROMPT])
    logits = peft_model(input_ids=ids, use_cache=False).logits[0]
    (logits * weights).sum().backward()
    expected = {"prompt_ids": torch.tensor(PROMPT, dtype=torch.float32), "objective_weights": weights,
                "base.logits": base_logits, "dora.logits": logits.detach().contiguous()}
    for name, param in peft_model.named_parameters():
        if param.grad is not None:
            # The adapter file's key: lora_magnitude_vector.default.weight is saved as lora_magnitude_vector.
            key = name.replace(".default", "").replace("lora_magnitude_vector.weight", "lora_magnitude_vector")
            expected["grad." + key] = param.grad.contiguous()
    grads = [k for k in expected if k.startswith("grad.")]
    assert len(grads) == 3 * (2 * 7 + 1), len(grads)
    effect = (expected["dora.logits"] - base_logits).abs().max().item()
    if effect < 1e-2:
        raise SystemExit(f"the DoRA adapter barely moves the logits ({effect})")

    merged = peft_model.merge_and_unload()
    for name, param in merged.named_parameters():
        module = name[: -len(".weight")]
        if any(module.endswith("." + t) or module == t for t in TARGETS):
            expected["merged." + module] = param.detach().contiguous()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids, use_cache=False).logits[0]
    gap = (merged_logits - expected["dora.logits"]).abs().max().item()
    assert gap < 1e-4, f"merged logits differ from the adapter's by {gap}"
    save_file(expected, out / "expected.safetensors", metadata={"peft": __import__("peft").__version__,
                                                                 "torch": torch.__version__})
    print(f"wrote {out}: max |dora - base| logits {effect:.3f}, {len(grads)} gradients, merged gap {gap:.2e}")


SPEC_VOCAB = 128

if __name__ == "__main__":
    make(hf.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
