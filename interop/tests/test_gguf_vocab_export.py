"""`mixtune export-gguf` of tokenizer.json-only vocabularies beside llama.cpp's own convert_hf_to_gguf.py.

Two converter runs (f16, started together and shared by the tests through a module fixture, ~20 s each) and the
matching mixtune runs:
- A Mistral-Nemo-shaped checkpoint (head_dim 16 where hidden / heads is 8, the weights of
  make_gguf_kquant_goldens.wide_weights) with mistral_common's whole Mistral-Nemo vocabulary (tekken_240718.json
  through transformers' tekken conversion, the Hub file's BOS post-processor; 131072 tokens, the merges as pairs), as
  in the committed golden two of its added tokens made plain (<|tool|>: looks special, control; "\u2581[CALL]":
  user-defined, written with a space), a plain vocabulary token named in tokenizer_config.json's
  additional_special_tokens (transformers makes it special: control), tokenizer_config.json and chat_template.jinja:
  the converter (its own gguf-py, as make_gguf_goldens.py runs it) and mixtune write the same file, byte for byte.
- A Mixtral whose config.json has no head_dim (as the Hub's Mixtral-8x7B) with the committed cut Tekken files: no
  attention key/value length in either file, which are the same, byte for byte.
- A byte-level BPE whose pre-tokenizer the converter does not know (golden/tokenizer/tekken-style.json): its chkhsh,
  computed as get_vocab_base_pre computes it (AutoTokenizer.encode of the check text), is not in the converter's
  table (read out of its source), so the converter stops there ("BPE pre-tokenizer was not recognized", the refusal
  make_gguf_vocab_goldens.py records from a real run); mixtune exits 2 naming that chkhsh and writes nothing.
No f32 / q8_0 runs (the vocabulary does not depend on the type; test_gguf_export.py and test_gguf_kquants.py hold the
tensor types) and no separate cut-vocabulary run (the whole vocabulary carries its cases): one converter run per
checkpoint keeps the file's time near that of two converter starts.
Skipped where the converter is not at $LLAMA_CPP_SRC (a clean clone has none); trainer's ExportGgufVocabTest holds
the committed golden.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGUFReader

import make_gguf_vocab_goldens as goldens

MIXTUNE = goldens.REPO / "bin" / "mixtune"
CONVERTER = goldens.LLAMA_CPP_SRC / "convert_hf_to_gguf.py"
pytestmark = pytest.mark.skipif(not CONVERTER.is_file(), reason=f"llama.cpp's converter is not at {CONVERTER} (set "
                                "LLAMA_CPP_SRC, see make_gguf_goldens.py); trainer's ExportGgufVocabTest holds the "
                                "committed golden")
TEKKEN_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# the converter's own gguf-py, as make_gguf_goldens.py runs it
ENV = {name: value for name, value in os.environ.items() if name != "NO_LOCAL_GGUF"}
PLAIN = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": False}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_file(ours: Path, theirs: Path) -> None:
    if sha256(ours) == sha256(theirs):
        return
    # where they differ, for the failure message (GGUFReader takes ~10 s on a 131072-token file)
    a, b = GGUFReader(ours), GGUFReader(theirs)
    assert list(a.fields) == list(b.fields), "metadata keys in the converter's order"
    for key in b.fields:
        assert a.fields[key].contents() == b.fields[key].contents(), key
    assert [(t.name, t.tensor_type, list(t.shape)) for t in a.tensors] == \
        [(t.name, t.tensor_type, list(t.shape)) for t in b.tensors]
    raise AssertionError("the same metadata and tensor list, different bytes")


SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def metadata(path: Path) -> dict:
    """The GGUF file's key/value section, read with struct (GGUFReader builds a numpy view per array element)."""
    data, at = path.read_bytes(), 24
    assert data[:4] == b"GGUF"

    def take(fmt: str):
        nonlocal at
        value = struct.unpack_from(fmt, data, at)[0]
        at += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal at
        n = take("<Q")
        at += n
        return data[at - n:at].decode("utf-8")

    def value(kind: int):
        if kind == 8:
            return string()
        if kind == 9:
            inner, n = take("<I"), take("<Q")
            return [value(inner) for _ in range(n)]
        return take(SCALARS[kind])

    out = {}
    for _ in range(struct.unpack_from("<Q", data, 16)[0]):
        key = string()
        out[key] = value(take("<I"))
    return out


def nemo_files(work: Path) -> tuple[dict[str, str], int]:
    """Mistral-Nemo's whole tokenizer.json with the committed golden's twists, and the named vocabulary token's id."""
    full = goldens.nemo_tokenizer(work)
    vocab, added = full["model"]["vocab"], full["added_tokens"]
    for plain in (dict(PLAIN, id=20, content="<|tool|>"), dict(PLAIN, id=21, content="\u2581[CALL]")):
        del vocab[added[plain["id"]]["content"]]
        vocab[plain["content"]] = plain["id"]
        added[plain["id"]] = plain
    # a token raw text never holds (its U+0120), so the check text's ids and the pre-tokenizer stay "tekken"
    named, named_id = next((token, i) for token, i in sorted(vocab.items(), key=lambda item: item[1])
                           if i >= 70000 and token.startswith("\u0120"))
    config = json.loads((goldens.TEKKEN_OUT / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["additional_special_tokens"] = [named]
    return {"tokenizer.json": json.dumps(full, ensure_ascii=False),
            "tokenizer_config.json": json.dumps(config, indent=2),
            "chat_template.jinja": (goldens.TEKKEN_OUT / "chat_template.jinja").read_text(encoding="utf-8")}, named_id


def in_background(log: Path, *command) -> tuple[subprocess.Popen, Path]:
    """In the background, its output to a file (a pipe read only at the end would stop it when full)."""
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen([str(c) for c in command], stdout=out, stderr=subprocess.STDOUT, env=ENV), log


def mixtune(log: Path, *args) -> tuple[subprocess.Popen, Path]:
    return in_background(log, MIXTUNE, *args)


def converter(model: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """goldens.convert, started in the background."""
    return in_background(out.with_suffix(".log"), sys.executable, "-c", goldens.CONVERTER_MAIN, CONVERTER, model,
                   "--outfile", out, "--outtype", "f16")


def finished(run: tuple[subprocess.Popen, Path]) -> subprocess.CompletedProcess:
    process, log = run
    process.wait(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, "", log.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every export once: the Mixtral's converter starts at once, the Nemo's when its vocabulary is built."""
    work = tmp_path_factory.mktemp("gguf-vocab")
    mixtral = work / "mixtral-style"
    goldens.checkpoint(goldens.MIXTRAL_STYLE, mixtral,
                       {name: (goldens.TEKKEN_OUT / name).read_text(encoding="utf-8") for name in TEKKEN_FILES})
    started = {"mixtral": (converter(mixtral, work / "mixtral-converter.gguf"),
                           mixtune(work / "mixtral-mixtune.log", "export-gguf", "--model", mixtral, "--out",
                                   work / "mixtral-mixtune.gguf", "--type", "f16"))}
    files, named = nemo_files(work / "convert")
    # the first mixtune finished before the next starts: bin/mixtune builds its jar where sources changed
    started["mixtral"] = (started["mixtral"][0], finished(started["mixtral"][1]))
    nemo = work / "nemo-style"
    goldens.checkpoint(goldens.NEMO_STYLE, nemo, files)
    started["nemo"] = (converter(nemo, work / "nemo-converter.gguf"),
                       mixtune(work / "nemo-mixtune.log", "export-gguf", "--model", nemo, "--out",
                               work / "nemo-mixtune.gguf", "--type", "f16"))
    unknown = work / "unknown-style"
    goldens.checkpoint(goldens.UNKNOWN_STYLE, unknown, {
        "tokenizer.json": goldens.TEKKEN_STYLE.read_text(encoding="utf-8"),
        "tokenizer_config.json": (goldens.TEKKEN_OUT / "tokenizer_config.json").read_text(encoding="utf-8")})
    started["unknown"] = (None, mixtune(work / "unknown.log", "export-gguf", "--model", unknown, "--out",
                                           work / "unknown.gguf"))
    return {"work": work, "named": named, "unknown_model": unknown,
            **{name: tuple(run if not isinstance(run, tuple) else finished(run) for run in pair)
               for name, pair in started.items()}}


def test_mistral_nemos_whole_vocabulary_exports_as_the_converter_writes_it(runs):
    theirs, ours = runs["nemo"]
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    fields = metadata(runs["work"] / "nemo-mixtune.gguf")
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "tekken"
    assert fields["llama.attention.key_length"] == 16
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    named = runs["named"]
    # the cases the file must hold for the comparison to mean something: control, looks special, user-defined,
    # named in tokenizer_config.json, a plain token
    assert [types[1], types[20], types[21], types[named], types[named - 1]] == [3, 3, 4, 3, 1]
    assert tokens[21] == " [CALL]"
    # get_vocab_base's round trip of a non-normalized added token: the byte-level decoder turns its U+0120 to a space
    assert tokens[named].startswith(" ")
    assert_same_file(runs["work"] / "nemo-mixtune.gguf", runs["work"] / "nemo-converter.gguf")


def test_a_mixtral_without_head_dim_exports_as_the_converter_writes_it(runs):
    theirs, ours = runs["mixtral"]
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert "llama.attention.key_length" not in metadata(runs["work"] / "mixtral-mixtune.gguf")
    assert_same_file(runs["work"] / "mixtral-mixtune.gguf", runs["work"] / "mixtral-converter.gguf")


def test_a_pre_tokenizer_the_converter_does_not_know_is_refused_by_both(runs):
    table = goldens.pre_tokenizers()
    chkhsh = goldens.chkhsh(runs["unknown_model"], table["chktxt"])
    assert chkhsh not in table["chkhsh"], "get_vocab_base_pre would name it"
    _, ours = runs["unknown"]
    assert ours.returncode == 2, ours.stderr
    assert chkhsh in ours.stderr
    assert not (runs["work"] / "unknown.gguf").exists()
