"""Converts Mistral's v1 SentencePiece model (shipped in the mistral_common wheel) to a Hugging Face tokenizer.json that
gives sentencepiece's ids on every text, so that mixtune's Java (DJL's binding of the tokenizers library) tokenizes
exactly as Mistral's reference, mistral-common, does.

Writes configs/tokenizer/mistral-v1/: tokenizer.json, tokenizer_config.json, and the original tokenizer.model so that
the tests can compare against sentencepiece. Refuses to write when tokenizer.json and sentencepiece disagree on any
text of tokenizer_texts.corpus() (20k+ texts).

transformers' own conversion (LlamaTokenizer from tokenizer.model) gives the vocabulary and the merges; three things
of its tokenizer.json differ from sentencepiece and are changed here (sentencepiece's BPE: bpe_model.cc, Encode):
- merge order: sentencepiece merges, at each step, the adjacent pair whose merged piece scores highest (leftmost on a
  tie). The converter ranks merges by piece id, which follows the score except for the 15 whitespace-only pieces
  ("▁▁", "▁▁▁▁", ... ids 259, 260, 273, ...): the model scores those -1e9, below every other piece, so sentencepiece
  merges runs of spaces only after everything else. Their merges move to the end of the list, in their order.
- the dummy prefix: sentencepiece (add_dummy_prefix, identity normalizer) turns spaces into "▁" and puts one "▁" in
  front of every non-empty text, also of a text that starts with a space. Metaspace prepends only when the text does
  not already start with "▁", so " leading" lost a token. Now normalizer Sequence[Prepend("▁"), Replace(" ", "▁")]
  (Prepend skips an empty text, as sentencepiece does) and no pre-tokenizer: sentencepiece does not split the text
  before BPE either.
- special tokens in text: sentencepiece never matches <unk>, <s>, </s> in text (they are control/unknown pieces that
  only come from ids), while tokenizers matches every added token in the raw text first, so a message quoting "</s>"
  turned into EOS id 2. added_tokens is now empty; the three stay in the vocabulary at ids 0-2, the post-processor
  still adds <s> by id, and BOS/EOS are added by id (mixtune's TextTokenizer, templates). Without added tokens the
  tokenizers library no longer knows them as special, so TextTokenizer.decode drops BOS/EOS itself.

tokenizer_config.json names PreTrainedTokenizerFast (transformers 5 loads it as TokenizersBackend), so that
transformers runs this tokenizer.json as written: LlamaTokenizer would rebuild the pipeline from vocab and merges with
its own Metaspace (prepend_scheme "first", the leading-space difference). transformers re-registers bos/eos/unk from
the config as special tokens (decode(skip_special_tokens=True) keeps working); split_special_tokens true keeps them
from being matched in text, as sentencepiece does.

Run: interop/.venv/bin/python interop/convert_tokenizer.py [out_dir]
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import sys
import tempfile
from pathlib import Path

import sentencepiece
from tokenizers import Tokenizer
from transformers import AutoTokenizer

import tokenizer_texts

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "configs" / "tokenizer" / "mistral-v1"
WHITESPACE = "▁"

# The tokenizer_config.json that Mistral-7B-v0.1 ships: Llama's SentencePiece conventions, legacy mode, BOS only.
# Only the conversion reads it; the config written out is TOKENIZER_CONFIG.
LLAMA_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "legacy": True,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "add_bos_token": True,
    "add_eos_token": False,
}
TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "split_special_tokens": True,
    "clean_up_tokenization_spaces": False,
    "model_max_length": 1000000000000000019884624838656,
}


def sentencepiece_model() -> Path:
    # mistral_common's package __init__ imports nothing heavy, so this works although it is installed without deps.
    return Path(str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"))


def transformers_conversion() -> dict:
    """tokenizer.json as transformers' converter writes it from tokenizer.model."""
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
        return json.loads((saved / "tokenizer.json").read_text())


def as_sentencepiece(converted: dict) -> dict:
    """The three changes of the module docstring."""
    out = dict(converted)
    model = dict(converted["model"])
    spaces = lambda merge: all(set(part) == {WHITESPACE} for part in merge)  # noqa: E731
    model["merges"] = [m for m in model["merges"] if not spaces(m)] + [m for m in model["merges"] if spaces(m)]
    out["model"] = model
    for token in converted["added_tokens"]:
        if model["vocab"].get(token["content"]) != token["id"]:
            raise RuntimeError(f"added token {token} is not the vocabulary's piece {token['id']}")
    out["added_tokens"] = []
    out["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": WHITESPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": WHITESPACE},
        ],
    }
    out["pre_tokenizer"] = None
    return out


def disagreements(tokenizer_json: Path, model_file: Path, texts: list[str]) -> list[str]:
    """Texts where the tokenizers library on tokenizer_json and sentencepiece give different ids (no BOS)."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    fast = Tokenizer.from_file(str(tokenizer_json))
    return [t for t in texts if fast.encode(t, add_special_tokens=False).ids != sp.encode(t)]


def convert(out_dir: Path = OUT_DIR) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "mistral-v1"
        staged.mkdir()
        # Through the tokenizers library, which checks the file and writes it in its own layout.
        Tokenizer.from_str(json.dumps(as_sentencepiece(transformers_conversion()))).save(
            str(staged / "tokenizer.json"), pretty=True)
        (staged / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
        shutil.copyfile(sentencepiece_model(), staged / "tokenizer.model")
        texts = tokenizer_texts.corpus()
        differ = disagreements(staged / "tokenizer.json", staged / "tokenizer.model", texts)
        if differ:
            raise RuntimeError(f"tokenizer.json differs from sentencepiece on {len(differ)} of {len(texts)} texts, "
                               f"e.g. {differ[:3]!r}")
        print(f"convert_tokenizer: tokenizer.json equals sentencepiece on all {len(texts)} texts")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(staged, out_dir)
    return out_dir


if __name__ == "__main__":
    out = convert(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR)
    print(f"convert_tokenizer: wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
