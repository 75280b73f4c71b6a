"""`mixtune export-lora-gguf` beside llama.cpp's convert_lora_to_gguf.py and PEFT.

- Where the converter is found ($LLAMA_CPP_SRC, default ~/.cache/mixtune/llama.cpp: convert_lora_to_gguf.py with
  convert_hf_to_gguf.py, conversion/ and gguf-py/), it runs on fresh adapters (mixtune's init-adapter on tiny-mistral
  and tiny-mixtral, PEFT's own with a rank_pattern, and PEFT's with rsLoRA, rank and alpha patterns, where the converter
  runs on the adapter with PEFT's scale folded into lora_B, as mixtune folds it) and mixtune's file equals its file
  byte for byte; skipped
  otherwise (the committed golden, lora-converter.json, is the check there: ExportLoraGgufTest).
- Always, on tiny-mistral: GGUFReader reads mixtune's f32 file, and (adapter.lora.alpha / rank) lora_b @ lora_a, each
  head's Q/K rows put back in transformers' order, is PEFT's get_delta_weight of the adapter PeftModel.from_pretrained
  loads, for every module, rsLoRA and alpha_pattern included (a Mixtral's experts are fused parameters in PEFT 0.21 on transformers 5; there the Java
  ExportLoraGgufTest holds base GGUF + adapter to the merged export, which test_gguf_export.py holds to PEFT).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

import hf_models as hf
from make_gguf_lora_goldens import plain_equivalent

MIXTUNE = hf.repo_root() / "bin" / "mixtune"
LLAMA_CPP_SRC = Path(os.environ.get("LLAMA_CPP_SRC", Path.home() / ".cache" / "mixtune" / "llama.cpp")).expanduser()
HAS_CONVERTER = (LLAMA_CPP_SRC / "convert_lora_to_gguf.py").is_file()

ADAPTERS = {
    "tiny-mistral": ["--r", "4", "--alpha", "8", "--targets", "all-linear", "--init", "random", "--seed", "3"],
    "tiny-mixtral": ["--r", "2", "--alpha", "5", "--targets", "q_proj,k_proj,w1,w2,w3,gate,lm_head", "--init",
                     "random", "--seed", "4"],
}


def mixtune(*args) -> None:
    cmd = [str(MIXTUNE), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each case's (base, adapter): mixtune's on both presets, and PEFT's with a rank pattern on tiny-mistral."""
    work = tmp_path_factory.mktemp("gguf-lora")
    cases = {}
    for preset, args in ADAPTERS.items():
        base = work / preset
        mixtune("init-model", "--preset", preset, "--out", base, "--dtype", "fp32", "--seed", "1")
        adapter = work / f"{preset}-lora" / "adapter"  # general.name "Adapter", as a mixtune run's folder
        mixtune("init-adapter", "--model", base, "--out", adapter, *args)
        cases[preset] = (base, adapter)
    base = cases["tiny-mistral"][0]
    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "o_proj", "down_proj"],
                        rank_pattern={"k_proj": 8, "down_proj": 2}, init_lora_weights=False, task_type="CAUSAL_LM")
    adapter = work / "peft-lora" / "adapter"
    get_peft_model(model, config).save_pretrained(adapter)
    (adapter / "README.md").unlink()  # the converter would read its model card into general.*; mixtune does not
    cases["peft-rank-pattern"] = (base, adapter)
    torch.manual_seed(6)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=3, lora_alpha=7, use_rslora=True, target_modules="all-linear",
                        rank_pattern={"o_proj": 5}, alpha_pattern={"v_proj": 2}, init_lora_weights=False,
                        task_type="CAUSAL_LM")
    adapter = work / "peft-rslora" / "adapter"
    get_peft_model(model, config).save_pretrained(adapter)
    (adapter / "README.md").unlink()
    cases["peft-rslora-alpha-pattern"] = (base, adapter)
    return cases


@pytest.mark.skipif(not HAS_CONVERTER, reason=f"llama.cpp's convert_lora_to_gguf.py not in {LLAMA_CPP_SRC}")
@pytest.mark.parametrize("case", ["tiny-mistral", "tiny-mixtral", "peft-rank-pattern", "peft-rslora-alpha-pattern"])
@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_equals_the_converters_file(adapters, tmp_path, case, kind):
    base, adapter = adapters[case]
    ours = tmp_path / "mixtune.gguf"
    theirs = tmp_path / "converter.gguf"
    mixtune("export-lora-gguf", "--model", base, "--adapter", adapter, "--out", ours, "--type", kind)
    if case.startswith("peft-rslora"):
        # the converter ignores use_rslora and alpha_pattern: it runs on the adapter with PEFT's scale folded in
        plain = tmp_path / "plain" / "adapter"
        assert plain_equivalent(base, adapter, plain)
        adapter = plain
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    subprocess.run([sys.executable, str(LLAMA_CPP_SRC / "convert_lora_to_gguf.py"), "--base", str(base), "--outfile",
                    str(theirs), "--outtype", kind, str(adapter)], check=True, env=env, capture_output=True)
    assert ours.read_bytes() == theirs.read_bytes()


def unpermute(rows: np.ndarray, heads: int) -> np.ndarray:
    """LlamaModel.permute undone: each head's interleaved rows back to [first half; second half]."""
    out, rest = rows.shape[0], rows.shape[1:]
    return rows.reshape(heads, out // heads // 2, 2, *rest).swapaxes(1, 2).reshape(rows.shape)


@pytest.mark.parametrize("case", ["tiny-mistral", "peft-rank-pattern", "peft-rslora-alpha-pattern"])
def test_f32_file_holds_pefts_delta_weights(adapters, tmp_path, case):
    base, adapter = adapters[case]
    out = tmp_path / "adapter.gguf"
    mixtune("export-lora-gguf", "--model", base, "--adapter", adapter, "--out", out, "--type", "f32")
    reader = GGUFReader(out)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    alpha = reader.fields["adapter.lora.alpha"].contents()
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    config = json.loads((base / "config.json").read_text())
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down", "gate": "ffn_gate_inp"}
    experts = {"w1": "ffn_gate_exps", "w2": "ffn_down_exps", "w3": "ffn_up_exps"}
    checked = 0
    for name, module in model.named_modules():
        if not hasattr(module, "get_delta_weight") or "default" not in getattr(module, "lora_A", {}):
            continue
        expected = module.get_delta_weight("default").detach().numpy()
        parts = name.split(".")
        leaf = parts[-1]
        if leaf == "lm_head":
            ggml, index = "output.weight", None
        else:
            layer = parts[parts.index("layers") + 1]
            if leaf in experts:
                ggml, index = f"blk.{layer}.{experts[leaf]}.weight", int(parts[-2])
            else:
                ggml, index = f"blk.{layer}.{names[leaf]}.weight", None
        a, b = tensors[ggml + ".lora_a"], tensors[ggml + ".lora_b"]
        if index is not None:
            a, b = a[index], b[index]
        delta = (alpha / a.shape[0]) * (b.astype(np.float64) @ a.astype(np.float64))
        if leaf in heads:
            delta = unpermute(delta, heads[leaf])
        np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-7, err_msg=name)
        checked += 1
    assert checked == {"tiny-mistral": 14, "peft-rank-pattern": 8, "peft-rslora-alpha-pattern": 14}[case]
