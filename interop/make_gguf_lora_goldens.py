"""Regenerates trainer/src/test/resources/golden/gguf/lora-converter.json (see interop/GOLDENS.md): what llama.cpp's
convert_lora_to_gguf.py writes for LoRA adapters of mixtune's tiny presets, described as make_gguf_goldens.py
describes a GGUF file (every metadata key in file order with its type and value, every tensor's name, ggml shape,
type, offset and sha256, the whole file's size and sha256). ExportLoraGgufTest runs `mixtune export-lora-gguf` on the
same inputs and requires all of it equal.

Cases: tiny-mistral (fp32) with `init-adapter` on every linear layer (f32, f16, q8_0: q_proj and k_proj's lora_b
permuted); tiny-mixtral (bf16) with the attention, every expert's w1, w2, w3, the router and lm_head targeted (f32,
q8_0: the experts stacked into ffn_*_exps); and an adapter PEFT 0.21 itself writes (get_peft_model + save_pretrained)
for tiny-mistral with a rank_pattern (k_proj rank 8, the rest 4), q_proj, k_proj and v_proj targeted (f16),
committed under golden/gguf/lora-peft-rank-pattern/ (its README.md model card left out; base_model_name_or_path set to
the preset's name), since mixtune writes no rank patterns from the command line; and tiny-mistral with rsLoRA at
rank 3 and an alpha_pattern (f32, q8_0), which the converter ignores: it runs on the plain equivalent
(plain_equivalent: PEFT's scale over llama.cpp's alpha / rank folded into lora_B), what mixtune writes for the
adapter itself.

Run: LLAMA_CPP_SRC=DIR interop/.venv/bin/python interop/make_gguf_lora_goldens.py
DIR holds convert_lora_to_gguf.py, convert_hf_to_gguf.py, conversion/ and gguf-py/ of a llama.cpp checkout (read,
never copied into the repository; MIT); default ~/.cache/mixtune/llama.cpp. Builds mixtune (bin/mixtune) for
init-model and init-adapter. Deterministic: the presets, the adapters and PEFT's initialisation are seeded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from make_gguf_goldens import FETCH_HINT, LLAMA_CPP_SRC, MIXTUNE, REPO, converter_commit, describe, gguf_version, run, \
    write

GOLDEN_DIR = REPO / "trainer" / "src" / "test" / "resources" / "golden" / "gguf"
OUT = GOLDEN_DIR / "lora-converter.json"
PEFT_ADAPTER = GOLDEN_DIR / "lora-peft-rank-pattern"

ALL_LINEAR = ["--r", "4", "--alpha", "8", "--targets", "all-linear", "--init", "random", "--seed", "0"]
EXPERTS_AND_ROUTER = ["--r", "4", "--alpha", "8", "--targets", "q_proj,k_proj,v_proj,o_proj,w1,w2,w3,gate,lm_head",
                      "--init", "random", "--seed", "0"]

# rank 3: rsLoRA's 8 / sqrt(3) over llama.cpp's 8 / 3 is sqrt(3), no power of two; o_proj's alpha 5 by a pattern
RSLORA = ["--r", "3", "--alpha", "8", "--rslora", "--targets", "all-linear", "--init", "random", "--seed", "0"]
ALPHA_PATTERN = {"alpha_pattern": {"o_proj": 5.0}}

# (case name, preset, init-model dtype, init-adapter arguments or None for the committed PEFT adapter, --outtype,
#  keys written over the adapter's adapter_config.json)
CASES = [
    ("tiny-mistral-all-linear-f32", "tiny-mistral", "fp32", ALL_LINEAR, "f32", None),
    ("tiny-mistral-all-linear-f16", "tiny-mistral", "fp32", ALL_LINEAR, "f16", None),
    ("tiny-mistral-all-linear-q8_0", "tiny-mistral", "fp32", ALL_LINEAR, "q8_0", None),
    ("tiny-mixtral-experts-router-f32", "tiny-mixtral", "bf16", EXPERTS_AND_ROUTER, "f32", None),
    ("tiny-mixtral-experts-router-q8_0", "tiny-mixtral", "bf16", EXPERTS_AND_ROUTER, "q8_0", None),
    ("tiny-mistral-peft-rank-pattern-f16", "tiny-mistral", "fp32", None, "f16", None),
    ("tiny-mistral-rslora-alpha-pattern-f32", "tiny-mistral", "fp32", RSLORA, "f32", ALPHA_PATTERN),
    ("tiny-mistral-rslora-alpha-pattern-q8_0", "tiny-mistral", "fp32", RSLORA, "q8_0", ALPHA_PATTERN),
]


def plain_equivalent(base: Path, adapter: Path, out: Path) -> bool:
    """The adapter as llama.cpp's alpha / rank scales it right: each lora_B whose PEFT scale (module.scaling, rsLoRA
    and alpha_pattern included) differs from float32(lora_alpha) / rank multiplied by float32(PEFT's / llama.cpp's)
    in float32, its bytes patched in place (the file's tensor order, which the converter's output follows, kept), and
    use_rslora and alpha_pattern dropped from the config. What the converter writes for it is what llama.cpp must
    get; for the adapter as it is, the converter writes lora_alpha alone and llama.cpp applies another scale. False
    (nothing written) where every scale already agrees."""
    import struct

    import numpy as np
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((adapter / "adapter_config.json").read_text())
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    llama_alpha = float(np.float32(config["lora_alpha"]))
    factors = {}
    for name, module in model.named_modules():
        if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
            rank = module.r["default"]
            peft_scale = module.scaling["default"]
            llama_scale = llama_alpha / rank
            if abs(llama_scale - peft_scale) > 1e-6 * abs(peft_scale):
                factors[name + ".lora_B.weight"] = peft_scale / llama_scale
    if not factors:
        return False
    data = bytearray((adapter / "adapter_model.safetensors").read_bytes())
    header_size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_size])
    for key, factor in factors.items():
        info = header[key]
        assert info["dtype"] == "F32", key
        start, end = (8 + header_size + offset for offset in info["data_offsets"])
        values = torch.frombuffer(bytearray(data[start:end]), dtype=torch.float32)
        data[start:end] = (values * torch.tensor(factor, dtype=torch.float32)).numpy().tobytes()
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(bytes(data))
    config.update({"use_rslora": False, "alpha_pattern": {}})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return True


def make_peft_adapter(base: Path, work: Path) -> None:
    """PEFT's own adapter with a rank pattern, written to PEFT_ADAPTER (config and weights only)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"],
                        rank_pattern={"k_proj": 8}, init_lora_weights=False, task_type="CAUSAL_LM")
    saved = work / "peft-adapter"
    get_peft_model(model, config).save_pretrained(saved)
    adapter_config = json.loads((saved / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = base.name
    adapter_config["target_modules"] = sorted(adapter_config["target_modules"])  # a set in PEFT: hash-ordered
    PEFT_ADAPTER.mkdir(parents=True, exist_ok=True)
    (PEFT_ADAPTER / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(saved / "adapter_model.safetensors", PEFT_ADAPTER / "adapter_model.safetensors")


def make(work: Path) -> dict:
    if not (LLAMA_CPP_SRC / "convert_lora_to_gguf.py").is_file():
        sys.exit(FETCH_HINT.format(src=LLAMA_CPP_SRC))
    out = []
    for name, preset, dtype, adapter_args, outtype, config_keys in CASES:
        case_dir = work / name
        base = case_dir / "base" / preset
        run(MIXTUNE, "init-model", "--preset", preset, "--out", base, "--dtype", dtype)
        # general.name comes from the adapter's folder: "adapter", as a mixtune run names it
        adapter = case_dir / "adapter"
        if adapter_args is None:
            make_peft_adapter(base, case_dir)
            shutil.copytree(PEFT_ADAPTER, adapter)
        else:
            run(MIXTUNE, "init-adapter", "--model", base, "--out", adapter, *adapter_args)
        if config_keys:
            adapter_config = json.loads((adapter / "adapter_config.json").read_text())
            adapter_config.update(config_keys)
            (adapter / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        # the converter's input: the adapter, or its plain equivalent where llama.cpp would scale it otherwise
        plain = case_dir / "plain" / "adapter"
        rescaled = bool(config_keys) or "--rslora" in (adapter_args or [])  # tiny-mistral's (PEFT fuses Mixtral's)
        converted = plain if rescaled and plain_equivalent(base, adapter, plain) else adapter
        gguf_file = case_dir / f"{name}.gguf"
        env = dict(os.environ)
        env.pop("NO_LOCAL_GGUF", None)
        subprocess.run([sys.executable, str(LLAMA_CPP_SRC / "convert_lora_to_gguf.py"), "--base", str(base),
                        "--outfile", str(gguf_file), "--outtype", outtype, str(converted)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        entry = {"name": name, "preset": preset, "dtype": dtype, "seed": 0, "adapter": adapter_args,
                 "adapter_config": config_keys, "outtype": outtype, "scale_folded": converted == plain}
        entry.update(describe(gguf_file))
        out.append(entry)
    return {"converter": "llama.cpp convert_lora_to_gguf.py", "snapshot": converter_commit(), "gguf": gguf_version(),
            "cases": out}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gguf-lora-goldens-") as work:
        write(OUT, make(Path(work)))


if __name__ == "__main__":
    main()
