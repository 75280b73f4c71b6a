"""Goldens for mixtune's PiSSA and OLoRA starts (PEFT's init_lora_weights): lora/src/test/resources/golden/lora-init/.

Run: interop/.venv/bin/python interop/make_lora_init_goldens.py [out_dir]

A tiny Mistral (vocabulary 128, float32) gets a LoRA adapter from peft 0.21 on every linear layer of its decoder,
r 4, lora_alpha 8, rank_pattern {k_proj: 2}, alpha_pattern {o_proj: 4}, with init_lora_weights "pissa" and "olora".
For each, expected.safetensors holds per module the adapter's start (A0, B0), the residual base weight PEFT leaves,
a "trained" A and B (A0 and B0 moved by 0.05 N(0, 1), seeded), and the logits of the prompt at the start (equal to
the base's) and after the move; converted/ is what save_pretrained(..., path_initial_model_for_weight_conversion=...)
writes for the moved adapter (a plain LoRA of rank 2r), whose logits on the ORIGINAL base are stored too. float32,
eager attention, one torch thread, fixed seeds. See interop/GOLDENS.md.
"""

from __future__ import annotations

import json
import shutil
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file

import hf_models as hf

OUT = hf.repo_root() / "lora" / "src" / "test" / "resources" / "golden" / "lora-init"
SPEC = hf.CheckpointSpec(arch="mistral", seed=7401, sliding_window=8, intermediate_size=96,
                         shape=(("vocab_size", 128),))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPT = [1, 5, 9, 30, 17, 42, 55, 3, 77, 127, 64, 100, 11, 23]
INITS = ["pissa", "olora"]
SEED = 7402


def config(init):
    return LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, rank_pattern={"k_proj": 2},
                      alpha_pattern={"o_proj": 4}, init_lora_weights=init, task_type="CAUSAL_LM")


def logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor([PROMPT]), use_cache=False).logits[0].contiguous()


def tidy(adapter_dir, base):
    (adapter_dir / "README.md").unlink(missing_ok=True)
    path = adapter_dir / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg["base_model_name_or_path"] = base
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def make(out) -> None:
    torch.set_num_threads(1)
    if out.exists():
        shutil.rmtree(out)
    base_dir = out / "base"
    hf.save_checkpoint(hf.build_model(SPEC), SPEC, base_dir)
    base_logits = logits(hf.load_reference(base_dir))
    summary = []
    for init in INITS:
        torch.manual_seed(SEED)
        peft_model = get_peft_model(hf.load_reference(base_dir), config(init))
        expected = {"prompt_ids": torch.tensor(PROMPT, dtype=torch.float32), "base.logits": base_logits,
                    "start.logits": logits(peft_model)}
        case = out / init
        initial_dir = case / "initial"
        peft_model.peft_config["default"].init_lora_weights = True  # PEFT's guide: the start as a plain LoRA
        peft_model.save_pretrained(initial_dir)
        generator = torch.Generator().manual_seed(SEED)
        gaps = []
        for name, module in peft_model.named_modules():
            if not hasattr(module, "lora_A") or "default" not in module.lora_A:
                continue
            key = name.removeprefix("base_model.model.")
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            expected[key + ".A0"] = a.detach().clone().contiguous()
            expected[key + ".B0"] = b.detach().clone().contiguous()
            expected[key + ".residual"] = module.base_layer.weight.detach().clone().contiguous()
            s = torch.linalg.svdvals(module.base_layer.weight + module.scaling["default"] * b @ a)
            r = a.shape[0]
            gaps.append(((s[r - 1] - s[r]) / s[0]).item())
            with torch.no_grad():
                a.add_(0.05 * torch.randn(a.shape, generator=generator))
                b.add_(0.05 * torch.randn(b.shape, generator=generator))
            expected[key + ".A"] = a.detach().clone().contiguous()
            expected[key + ".B"] = b.detach().clone().contiguous()
        expected["trained.logits"] = logits(peft_model)
        converted = case / "converted"
        peft_model.save_pretrained(converted, path_initial_model_for_weight_conversion=str(initial_dir))
        shutil.rmtree(initial_dir)
        tidy(converted, "../../base")
        reloaded = PeftModel.from_pretrained(hf.load_reference(base_dir), converted)
        expected["converted.logits"] = logits(reloaded)
        gap = (expected["converted.logits"] - expected["trained.logits"]).abs().max().item()
        start_gap = (expected["start.logits"] - base_logits).abs().max().item()
        save_file(expected, case / "expected.safetensors",
                  metadata={"peft": __import__("peft").__version__, "torch": torch.__version__})
        summary.append(f"{init}: start-vs-base {start_gap:.1e}, converted-vs-trained {gap:.1e}, "
                       f"smallest (s_r - s_r+1)/s_0 {min(gaps):.3f}")
    print(f"wrote {out}: " + "; ".join(summary))


if __name__ == "__main__":
    make(hf.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
