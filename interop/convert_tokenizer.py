"""Converts Mistral's v1 SentencePiece model (shipped in the mistral_common wheel) to a Hugging Face tokenizer.

Writes configs/tokenizer/mistral-v1/: tokenizer.json and tokenizer_config.json as transformers' save_pretrained
writes them, plus the original tokenizer.model so that the data pipeline can compare against sentencepiece.

Run: interop/.venv/bin/python interop/convert_tokenizer.py
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import sys
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "configs" / "tokenizer" / "mistral-v1"

# The tokenizer_config.json that Mistral-7B-v0.1 ships: Llama's SentencePiece conventions, legacy mode, BOS only.
LLAMA_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "legacy": True,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "add_bos_token": True,
    "add_eos_token": False,
}


def sentencepiece_model() -> Path:
    # mistral_common's package __init__ imports nothing heavy, so this works although it is installed without deps.
    return Path(str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"))


def convert(out_dir: Path = OUT_DIR) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        shutil.copyfile(sentencepiece_model(), src / "tokenizer.model")
        (src / "tokenizer_config.json").write_text(json.dumps(LLAMA_CONFIG, indent=2))
        tok = AutoTokenizer.from_pretrained(src, use_fast=True)
        if not tok.is_fast:
            raise RuntimeError("transformers did not build a fast tokenizer from tokenizer.model")
        saved = Path(tmp) / "saved"
        tok.save_pretrained(saved)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (saved / name).exists():
                shutil.copyfile(saved / name, out_dir / name)
        shutil.copyfile(sentencepiece_model(), out_dir / "tokenizer.model")
    return out_dir


if __name__ == "__main__":
    out = convert(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR)
    print(f"convert_tokenizer: wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
