"""DoRA (PEFT 0.21's LoraConfig(use_dora=True)) between mixtune and PEFT, as the LoRA tests in test_peft_interop.py.

Export: a DoRA adapter mixtune trained (a few SFT steps, so the magnitudes have left their start) loads into
PeftModel.from_pretrained with every key placed, use_dora true, and PEFT gives mixtune's logits. Import: PEFT's own
DoRA adapter (magnitudes moved off their start) gives PEFT's logits in `mixtune generate`. Merge: `mixtune
merge-adapter` folds DoRA as merge_and_unload does, and transformers loads the result to the adapter's logits.
"""

import json

import numpy as np
import torch
from safetensors.numpy import load_file

import hf_models as hf
from test_peft_interop import work  # noqa: F401 (a fixture)
from test_peft_interop import (ATOL, MIN_EFFECT, PROMPT, Expected, assert_matches, assert_same_golden_folder, mixtune,
                               mixtune_generate, mixtune_generate_logits, peft_model_for)

MISTRAL_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def train_tiny_mistral_dora(out):
    """Three SFT steps of the preset tiny Mistral with DoRA on every linear and the lm_head, dropout on."""
    recipe = {
        "model": {"preset": "tiny-mistral", "quantize": "none"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "targets": MISTRAL_LINEARS + ["lm_head"], "use_dora": True},
        "data": {"files": [str(hf.repo_root() / "data" / "samples" / "chats.jsonl")], "template": "mistral",
                 "max_seq_len": 64},
        "train": {"max_steps": 3, "micro_batch_size": 2, "lr": 5.0e-2, "eval_every": 0, "save_every": 0},
        "output_dir": str(out),
    }
    (out.parent / f"{out.name}.yaml").write_text(json.dumps(recipe))
    mixtune("train", "--recipe", out.parent / f"{out.name}.yaml")
    return out / "adapter"


def test_trained_dora_adapter_in_peft_and_merged_in_transformers(tmp_path):
    adapter_dir = train_tiny_mistral_dora(tmp_path / "run")
    model_dir = tmp_path / "run" / "base-model"
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["peft_type"] == "LORA"
    saved = load_file(adapter_dir / "adapter_model.safetensors")
    magnitudes = sorted(k for k in saved if k.endswith(".lora_magnitude_vector"))
    assert len(magnitudes) == 2 * 7 + 1, magnitudes

    base = hf.load_reference(model_dir)
    base_logits = hf.prompt_forward(base, PROMPT)["logits"].numpy()
    peft_model = hf.load_peft(base, adapter_dir)  # fails on a key it cannot place or a weight left at its init
    # Trained: the magnitudes are no longer the row norms of W + scale B A they start at.
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        norm = (layer.base_layer.weight + layer.scaling["default"] * layer.lora_B["default"].weight
                @ layer.lora_A["default"].weight).norm(dim=1)
    moved = float((layer.lora_magnitude_vector["default"].weight - norm).abs().max())
    assert moved > 1e-3, f"the magnitudes did not train ({moved:.3g})"

    expected = hf.prompt_forward(peft_model, PROMPT)["logits"].numpy()
    logits = mixtune_generate_logits(model_dir, adapter_dir, tmp_path / "logits.safetensors")
    effect = float(np.abs(expected - base_logits).max())
    diff = float(np.abs(logits - expected).max())
    print(f"trained DoRA in PEFT: max |logit diff| {diff:.3g} (adapter effect {effect:.3g})")
    assert effect > MIN_EFFECT and diff <= ATOL, (effect, diff)

    mixtune("merge-adapter", "--model", model_dir, "--adapter", adapter_dir, "--out", tmp_path / "merged",
            "--dtype", "fp32")
    merged_logits = hf.prompt_forward(hf.load_reference(tmp_path / "merged"), PROMPT)["logits"].numpy()
    merged_diff = float(np.abs(merged_logits - expected).max())
    print(f"merged DoRA in transformers: max |logit diff| {merged_diff:.3g}")
    assert merged_diff <= ATOL


def peft_dora_adapter(model_dir, out, targets, seed):
    """PEFT's own DoRA adapter, A and B random and the magnitudes moved off ||W + scale B A||, saved."""
    peft_model = peft_model_for(model_dir, seed=seed, target_modules=targets, use_dora=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_magnitude_vector" in name:
                param.mul_(1 + 0.2 * torch.randn(param.shape, generator=generator))
    peft_model.save_pretrained(out)
    return peft_model


def test_peft_dora_adapters_in_mixtune(work, tmp_path):
    for arch, targets in (("mistral", MISTRAL_LINEARS), ("mixtral", ["q_proj", "k_proj", "v_proj", "o_proj"])):
        model_dir = work.base(arch)
        peft_model = peft_dora_adapter(model_dir, tmp_path / arch, targets, seed=31)
        expected = Expected.of(peft_model)
        logits, new_ids = mixtune_generate(model_dir, tmp_path / arch, tmp_path / f"{arch}.safetensors")
        assert_matches(logits, new_ids, expected, work.base_logits(arch), f"import DoRA {arch}")


def test_dora_on_mixtral_experts_is_refused_as_peft_refuses_it(work, tmp_path):
    # PEFT 0.21 on transformers 5: "lora.ParamWrapper does not work with use_dora=True"; mixtune names the module.
    try:
        peft_model_for(work.base("mixtral"), seed=1, target_modules="all-linear", use_dora=True)
        raise AssertionError("PEFT now takes DoRA on the Mixtral experts: mixtune's refusal is out of date")
    except ValueError as e:
        assert "does not work with use_dora=True" in str(e), e
    proc = mixtune("init-adapter", "--model", work.base("mixtral"), "--out", tmp_path / "adapter", "--dora",
                   expect_rc=2)
    assert "DoRA (use_dora) cannot go on model.layers.0.block_sparse_moe.experts.0.w1" in proc.stderr, proc.stderr


def test_committed_dora_golden_reproduces(tmp_path):
    import make_dora_goldens
    make_dora_goldens.make(tmp_path / "dora")
    assert_same_golden_folder(tmp_path / "dora", make_dora_goldens.OUT)
