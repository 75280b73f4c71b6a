"""PiSSA and OLoRA (PEFT 0.21's init_lora_weights) trained by mixtune, checked against PEFT.

A few SFT steps of the preset tiny Mistral (full-precision base, quantize: none) with lora.init_lora_weights pissa or
olora write the adapter as PEFT's conversion to a plain LoRA of rank 2r ([A ; A0], [B | -B0], r and alpha doubled).
PEFT rebuilds the trained model independently: get_peft_model with the same init on the original base (its own SVD
or QR, its own residual), lora_A/lora_B set to the first half of mixtune's file (each PiSSA triplet's sign taken from
PEFT's own start, which fixes it); that model's logits must equal PeftModel.from_pretrained(original base, mixtune's
adapter), and the second half must be PEFT's own start. Then `mixtune generate` with the adapter gives those logits.
"""

import json

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

import hf_models as hf
from test_peft_interop import ATOL, MIN_EFFECT, PROMPT, mixtune, mixtune_generate_logits

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def train(out, init):
    recipe = {
        "model": {"preset": "tiny-mistral", "quantize": "none"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": TARGETS, "init_lora_weights": init,
                 "rank_pattern": {"k_proj": 2}, "alpha_pattern": {"o_proj": 4}},
        "data": {"files": [str(hf.repo_root() / "data" / "samples" / "chats.jsonl")], "template": "mistral",
                 "max_seq_len": 64},
        "train": {"max_steps": 3, "micro_batch_size": 2, "lr": 5.0e-2, "eval_every": 0, "save_every": 0},
        "output_dir": str(out),
    }
    (out.parent / f"{out.name}.yaml").write_text(json.dumps(recipe))
    mixtune("train", "--recipe", out.parent / f"{out.name}.yaml")
    return out / "adapter"


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_converted_adapter_loads_on_the_original_base(tmp_path, init):
    adapter_dir = train(tmp_path / "run", init)
    model_dir = tmp_path / "run" / "base-model"
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (8, 16, True), config
    assert config["rank_pattern"] == {"k_proj": 4} and config["alpha_pattern"] == {"o_proj": 8}, config
    saved = load_file(adapter_dir / "adapter_model.safetensors")

    torch.manual_seed(0)
    reference = get_peft_model(hf.load_reference(model_dir), LoraConfig(
        r=4, lora_alpha=8, target_modules=TARGETS, rank_pattern={"k_proj": 2}, alpha_pattern={"o_proj": 4},
        init_lora_weights=init, task_type="CAUSAL_LM")).eval()
    start_gap = 0.0
    with torch.no_grad():
        for name, module in reference.named_modules():
            if not hasattr(module, "lora_A") or "default" not in module.lora_A:
                continue
            key = name + ".lora_A.weight"
            a2, b2 = saved[key], saved[key.replace("lora_A", "lora_B")]
            r = a2.shape[0] // 2
            a0, b0 = a2[r:], -b2[:, r:]
            peft_a0, peft_b0 = module.lora_A["default"].weight, module.lora_B["default"].weight
            sign = torch.sign((a0 * peft_a0).sum(dim=1))  # PiSSA's triplets: a sign each (OLoRA: all +1)
            start_gap = max(start_gap, float((a0 * sign[:, None] - peft_a0).abs().max()),
                            float((b0 * sign[None, :] - peft_b0).abs().max()))
            module.lora_A["default"].weight.copy_(a2[:r] * sign[:, None])
            module.lora_B["default"].weight.copy_(b2[:, :r] * sign[None, :])
    assert start_gap < 1e-4, f"mixtune's start differs from PEFT's by {start_gap}"
    trained = hf.prompt_forward(reference, PROMPT)["logits"].numpy()

    base_logits = hf.prompt_forward(hf.load_reference(model_dir), PROMPT)["logits"].numpy()
    converted = PeftModel.from_pretrained(hf.load_reference(model_dir), adapter_dir).eval()
    in_peft = hf.prompt_forward(converted, PROMPT)["logits"].numpy()
    effect = float(np.abs(trained - base_logits).max())
    diff = float(np.abs(in_peft - trained).max())
    in_mixtune = mixtune_generate_logits(model_dir, adapter_dir, tmp_path / "logits.safetensors")
    mixtune_diff = float(np.abs(in_mixtune - in_peft).max())
    print(f"{init}: start vs PEFT {start_gap:.2g}, converted vs trained {diff:.3g}, mixtune vs PEFT "
          f"{mixtune_diff:.3g} (effect {effect:.3g})")
    assert effect > MIN_EFFECT and diff <= ATOL and mixtune_diff <= ATOL, (effect, diff, mixtune_diff)


def test_committed_lora_init_golden_reproduces(tmp_path):
    import make_lora_init_goldens
    from test_peft_interop import assert_same_golden_folder
    make_lora_init_goldens.make(tmp_path / "lora-init")
    assert_same_golden_folder(tmp_path / "lora-init", make_lora_init_goldens.OUT)
