"""Regenerates the goldens of `mixtune export-gguf` for tokenizer.json-only vocabularies (see interop/GOLDENS.md):

- merging/src/main/resources/io/mixtune/merging/gguf/bpe-pre-tokenizers.json: llama.cpp's get_vocab_base_pre table
  (the sha256 of a fixed text's ids -> tokenizer.ggml.pre), read out of the converter's source;
- trainer/src/test/resources/golden/gguf/tekken/: a Tekken tokenizer.json cut to what the converter's check text needs
  (373 of Mistral-Nemo's 131072 tokens at their own ids, the 90 merges its words use, 20 special tokens and two added
  ones that are not, the Hub file's BOS post-processor), with which the converter names the pre-tokenizer "tekken" as
  for Mistral-Nemo itself, and a Hub-style tokenizer_config.json and chat_template.jinja;
- trainer/src/test/resources/golden/gguf/converter-vocab.json: what llama.cpp's convert_hf_to_gguf.py writes for a
  Mistral-Nemo-shaped checkpoint (explicit head_dim unlike hidden / heads, vocabulary 131072) with those files, for a
  Mixtral whose config.json has no head_dim (as the Hub's Mixtral-8x7B), and that it refuses the byte-level BPE of
  golden/tokenizer/tekken-style.json (a pre-tokenizer it does not know), with the chkhsh it prints
  (ExportGgufVocabTest).

Run: interop/.venv/bin/python interop/make_gguf_vocab_goldens.py
Needs llama.cpp's converter in $LLAMA_CPP_SRC (as make_gguf_goldens.py) and mistral_common's tekken_240718.json (the
Mistral-Nemo vocabulary, installed in the venv). Deterministic: the weights are make_gguf_kquant_goldens.wide_weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from make_gguf_goldens import FETCH_HINT, LLAMA_CPP_SRC, REPO, converter_commit, describe, gguf_version, write
from make_gguf_kquant_goldens import wide_shapes, wide_weights

PRE_TOKENIZERS_OUT = REPO / "merging" / "src" / "main" / "resources" / "io" / "mixtune" / "merging" / "gguf" \
    / "bpe-pre-tokenizers.json"
TEKKEN_OUT = REPO / "trainer" / "src" / "test" / "resources" / "golden" / "gguf" / "tekken"
GOLDEN_OUT = REPO / "trainer" / "src" / "test" / "resources" / "golden" / "gguf" / "converter-vocab.json"
TEKKEN_STYLE = REPO / "model" / "src" / "test" / "resources" / "golden" / "tokenizer" / "tekken-style.json"

# Mistral-Nemo-12B's shape in small: head_dim 16 where hidden / heads is 8 (Nemo: 128 where 5120 / 32 is 160), its
# 131072-token vocabulary and rope theta; rows of 32 and 64 values (whole q8_0 blocks).
NEMO_STYLE = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 32,
              "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 16, "vocab_size": 131072, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
              "sliding_window": None, "max_position_embeddings": 1024, "tie_word_embeddings": False,
              "bos_token_id": 1, "eos_token_id": 2}
# A vocabulary of the tekken-style tokenizer's 700 tokens: the converter stops at its pre-tokenizer
UNKNOWN_STYLE = dict(NEMO_STYLE, vocab_size=768)
# A Mixtral whose config.json has no head_dim, as the Hub's Mixtral-8x7B: transformers' MixtralConfig leaves it None
# (MistralConfig fills in hidden / heads), and the converter writes no attention key/value length
MIXTRAL_STYLE = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 32,
                 "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "vocab_size": 131072, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
                 "max_position_embeddings": 1024, "tie_word_embeddings": False, "num_local_experts": 2,
                 "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02, "bos_token_id": 1, "eos_token_id": 2}

# Mistral-Nemo-Instruct-2407's tokenizer_config.json keys (its 1000 added_tokens_decoder entries left to
# tokenizer.json), a pad token, and a template in chat_template.jinja
TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "</s>",
    "model_max_length": 1000000000000000019884624838656,
    "pad_token": "<pad>",
    "tokenizer_class": "PreTrainedTokenizerFast",
    "unk_token": "<unk>",
}
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST]{{ m['content'] }}[/INST]"
                 "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
# The Hub's Mistral-Nemo tokenizer.json starts every text with <s>; transformers' tekken conversion writes none
BOS_POST_PROCESSOR = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
             {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
}


def converter_source() -> str:
    sources = [LLAMA_CPP_SRC / "convert_hf_to_gguf.py", *sorted((LLAMA_CPP_SRC / "conversion").glob("*.py"))]
    for source in sources:
        text = source.read_text(encoding="utf-8") if source.is_file() else ""
        if "def get_vocab_base_pre" in text:
            return text
    sys.exit(f"no get_vocab_base_pre in {LLAMA_CPP_SRC}")


def pre_tokenizers() -> dict:
    """get_vocab_base_pre's `if chkhsh == "...": res = "..."` in order, a later hash overriding (as its ifs do)."""
    body = converter_source().split("def get_vocab_base_pre", 1)[1].split("# Marker: End get_vocab_base_pre", 1)[0]
    chktxt = re.search(r"^\s*chktxt = (.+)$", body, re.M).group(1)
    table = {}
    for chkhsh, name in re.findall(r'if chkhsh == "([0-9a-f]{64})":\s*\n(?:\s*#.*\n)*\s*res = "([^"]+)"', body):
        table[chkhsh] = name
    return {"converter": "llama.cpp convert_hf_to_gguf.py get_vocab_base_pre", "snapshot": converter_commit(),
            "chktxt": eval(chktxt), "chkhsh": table}  # noqa: S307 - the converter's own string literal


def chkhsh(tokenizer_dir: Path, text: str) -> str:
    """get_vocab_base_pre's hash, as the converter computes it (transformers' AutoTokenizer, encode)."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tokenizer_dir).encode(text)
    return hashlib.sha256(str(ids).encode()).hexdigest()


def nemo_tokenizer(work: Path) -> dict:
    """Mistral-Nemo's tokenizer.json: transformers' own tekken conversion of mistral_common's tekken_240718.json,
    with the Hub file's BOS post-processor (the converter's "tekken" hash is of ids that start with <s>)."""
    stub_pydantic_extra_types()
    import mistral_common
    from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

    tekken = Path(mistral_common.__file__).parent / "data" / "tekken_240718.json"
    convert_tekken_tokenizer(str(tekken), chat_template=CHAT_TEMPLATE).save_pretrained(work)
    full = json.loads((work / "tokenizer.json").read_text(encoding="utf-8"))
    full["post_processor"] = BOS_POST_PROCESSOR
    return full


def tekken_tokenizer(work: Path, text: str) -> dict:
    """nemo_tokenizer cut to the tokens and merges the check text's words use, ids kept. Cutting keeps every encoding
    of the text: BPE applies the lowest-ranked merge present, and each merge it applied is kept."""
    from tokenizers import Tokenizer, pre_tokenizers as pre

    full = nemo_tokenizer(work)
    vocab = full["model"]["vocab"]
    ranks = {tuple(m): r for r, m in enumerate(full["model"]["merges"])}
    keep_tokens, keep_merges = set(pre.ByteLevel.alphabet()), set()
    words = [w for w, _ in Tokenizer.from_str(json.dumps(full)).pre_tokenizer.pre_tokenize_str(text)]
    for word in words:
        if word in vocab:  # ignore_merges: a word in the vocabulary is one token
            keep_tokens.add(word)
            continue
        symbols = list(word)
        while True:
            pairs = [(ranks[p], i) for i, p in enumerate(zip(symbols, symbols[1:])) if p in ranks]
            if not pairs:
                break
            rank, i = min(pairs)
            keep_merges.add(rank)
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
            keep_tokens.add(symbols[i])
        keep_tokens.update(symbols)
    # 20 of its 1000 special tokens, and two added tokens that are not special: one that looks special (control),
    # one user-defined, written with a U+2581 for its space; in the model's vocabulary too, as Nemo's are
    plain = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": False}
    added = full["added_tokens"][:20] + [dict(plain, id=20, content="<|tool|>"),
                                         dict(plain, id=21, content="\u2581[CALL]")]
    cut = dict(full, added_tokens=added)
    cut["model"] = dict(full["model"], vocab={**{t["content"]: t["id"] for t in added},
                                              **{t: i for t, i in vocab.items() if t in keep_tokens}},
                        merges=[m for r, m in enumerate(full["model"]["merges"]) if r in keep_merges])
    full_ids = Tokenizer.from_str(json.dumps(full)).encode(text).ids
    assert Tokenizer.from_str(json.dumps(cut)).encode(text).ids == full_ids, "the cut tokenizer encodes differently"
    return cut


def shapes_of(config: dict) -> dict[str, tuple[int, ...]]:
    return wide_shapes({"head_dim": config["hidden_size"] // config["num_attention_heads"], **config})


def checkpoint(config: dict, out: Path, files: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    shapes = shapes_of(config)
    save_file({n: wide_weights(t, shapes[n]) for t, n in enumerate(sorted(shapes))}, str(out / "model.safetensors"))
    for name, content in files.items():
        (out / name).write_text(content, encoding="utf-8")


# transformers 5.18's AutoTokenizer imports its mistral integration for a "mistral" config (to look for tekken.json),
# which imports mistral_common 1.12, which imports pydantic_extra_types for transcription requests: not installed in
# the venv. The converter is run with that one module stubbed when missing; without tekken.json the tokenizer is
# tokenizer.json's, as with the package installed.
CONVERTER_MAIN = """
import runpy, sys, types
try:
    import pydantic_extra_types.language_code
except ImportError:
    stub = types.ModuleType("pydantic_extra_types.language_code")
    stub.LanguageAlpha2 = str
    sys.modules["pydantic_extra_types"] = types.ModuleType("pydantic_extra_types")
    sys.modules["pydantic_extra_types.language_code"] = stub
sys.argv = sys.argv[1:]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])  # as `python convert_hf_to_gguf.py` puts the script's folder first
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def stub_pydantic_extra_types() -> None:
    exec(CONVERTER_MAIN.split("sys.argv = ")[0])  # noqa: S102 - the same stub, in this process


def convert(model: Path, out: Path, outtype: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the converter's own gguf-py, as make_gguf_goldens.py runs it
    return subprocess.run([sys.executable, "-c", CONVERTER_MAIN, str(LLAMA_CPP_SRC / "convert_hf_to_gguf.py"),
                           str(model), "--outfile", str(out), "--outtype", outtype], env=env, capture_output=True,
                          text=True)


def main() -> None:
    if not (LLAMA_CPP_SRC / "convert_hf_to_gguf.py").is_file():
        sys.exit(FETCH_HINT.format(src=LLAMA_CPP_SRC))
    table = pre_tokenizers()
    write(PRE_TOKENIZERS_OUT, table)
    with tempfile.TemporaryDirectory(prefix="gguf-vocab-goldens-") as tmp:
        work = Path(tmp)
        cut = tekken_tokenizer(work, table["chktxt"])
        tekken_files = {"tokenizer.json": json.dumps(cut, indent=1, ensure_ascii=False) + "\n",
                        "tokenizer_config.json": json.dumps(TOKENIZER_CONFIG, indent=2) + "\n",
                        "chat_template.jinja": CHAT_TEMPLATE}
        TEKKEN_OUT.mkdir(parents=True, exist_ok=True)
        for name, content in tekken_files.items():
            (TEKKEN_OUT / name).write_text(content, encoding="utf-8")
        print(f"wrote {TEKKEN_OUT.relative_to(REPO)}/ ({', '.join(tekken_files)})")

        cases = []
        model = work / "tekken" / "nemo-style"
        checkpoint(NEMO_STYLE, model, tekken_files)
        assert table["chkhsh"].get(chkhsh(model, table["chktxt"])) == "tekken"
        gguf_file = work / "tekken" / "nemo-style-f16.gguf"
        done = convert(model, gguf_file, "f16")
        assert done.returncode == 0, done.stderr
        cases.append({"name": "nemo-style-tekken-f16", "checkpoint": "nemo-style", "files": "golden/gguf/tekken",
                      "outtype": "f16", **describe(gguf_file)})

        model = work / "mixtral" / "mixtral-style"
        checkpoint(MIXTRAL_STYLE, model, tekken_files)
        gguf_file = work / "mixtral" / "mixtral-style-f16.gguf"
        done = convert(model, gguf_file, "f16")
        assert done.returncode == 0, done.stderr
        cases.append({"name": "mixtral-style-no-head-dim-f16", "checkpoint": "mixtral-style",
                      "files": "golden/gguf/tekken", "outtype": "f16", **describe(gguf_file)})

        model = work / "unknown" / "nemo-style"
        checkpoint(UNKNOWN_STYLE, model, {"tokenizer.json": TEKKEN_STYLE.read_text(encoding="utf-8"),
                                          "tokenizer_config.json": tekken_files["tokenizer_config.json"]})
        done = convert(model, work / "unknown" / "refused.gguf", "f16")
        assert done.returncode != 0 and not (work / "unknown" / "refused.gguf").exists(), done.stderr
        refused = re.search(r"\*\* chkhsh:\s+([0-9a-f]{64})", done.stderr).group(1)
        assert refused == chkhsh(model, table["chktxt"]) and refused not in table["chkhsh"]
        cases.append({"name": "tekken-style-unknown-pre-tokenizer", "checkpoint": "unknown-style",
                      "tokenizer": "golden/tokenizer/tekken-style.json", "refused": True, "chkhsh": refused,
                      "error": "BPE pre-tokenizer was not recognized - update get_vocab_base_pre()"})

    checkpoints = {name: {"config": config, "tensors": [[n, list(shape)] for n, shape in
                                                       sorted(shapes_of(config).items())]}
                   for name, config in (("nemo-style", NEMO_STYLE), ("unknown-style", UNKNOWN_STYLE),
                                        ("mixtral-style", MIXTRAL_STYLE))}
    write(GOLDEN_OUT, {"converter": "llama.cpp convert_hf_to_gguf.py", "snapshot": converter_commit(),
                       "gguf": gguf_version(), "checkpoints": checkpoints, "cases": cases})


if __name__ == "__main__":
    main()
