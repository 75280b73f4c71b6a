"""`mixtune export-gguf` of tokenizer.json-only vocabularies beside llama.cpp's own convert_hf_to_gguf.py.

- A Mistral-Nemo-shaped fp32 checkpoint (head_dim 16 where hidden / heads is 8, vocabulary 131072, the weights of
  make_gguf_kquant_goldens.wide_weights) with the committed Tekken tokenizer.json (cut from Mistral-Nemo's, the
  converter's pre-tokenizer "tekken"), tokenizer_config.json and chat_template.jinja: the converter (run with its own
  gguf-py, as make_gguf_goldens.py runs it) and mixtune write the same file, byte for byte, for f32, f16 and q8_0;
  GGUFReader reads the same metadata keys in the same order and the same tensors.
- The same checkpoint with mistral_common's full Mistral-Nemo vocabulary (tekken_240718.json through transformers'
  tekken conversion, the Hub file's BOS post-processor): the same file, byte for byte (f16).
- A Mixtral whose config.json has no head_dim (as the Hub's Mixtral-8x7B): no attention key/value length in either
  file, which are the same, byte for byte.
- A byte-level BPE whose pre-tokenizer the converter does not know (golden/tokenizer/tekken-style.json): the converter
  stops ("BPE pre-tokenizer was not recognized"), mixtune exits 2 naming the same chkhsh, and neither writes a file.
Skipped where the converter is not at $LLAMA_CPP_SRC (a clean clone has none); trainer's ExportGgufVocabTest holds
the committed golden.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
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


def mixtune(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(MIXTUNE), *map(str, args)], capture_output=True, text=True, timeout=600)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_file(ours: Path, theirs: Path) -> None:
    a, b = GGUFReader(ours), GGUFReader(theirs)
    assert list(a.fields) == list(b.fields), "metadata keys in the converter's order"
    for key in b.fields:
        if key != "tokenizer.ggml.tokens":
            assert a.fields[key].contents() == b.fields[key].contents(), key
    assert a.fields["tokenizer.ggml.tokens"].contents() == b.fields["tokenizer.ggml.tokens"].contents()
    assert [(t.name, t.tensor_type, list(t.shape)) for t in a.tensors] == \
        [(t.name, t.tensor_type, list(t.shape)) for t in b.tensors]
    assert sha256(ours) == sha256(theirs), "the whole file"


@pytest.fixture(scope="module")
def tekken_model(tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("tekken") / "nemo-style"
    goldens.checkpoint(goldens.NEMO_STYLE, model,
                       {name: (goldens.TEKKEN_OUT / name).read_text(encoding="utf-8") for name in TEKKEN_FILES})
    return model


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
def test_a_tekken_vocabulary_exports_as_the_converter_writes_it(tekken_model, tmp_path, outtype):
    theirs, ours = tmp_path / "converter.gguf", tmp_path / "mixtune.gguf"
    done = goldens.convert(tekken_model, theirs, outtype)
    assert done.returncode == 0, done.stderr
    exported = mixtune("export-gguf", "--model", tekken_model, "--out", ours, "--type", outtype)
    assert exported.returncode == 0, exported.stderr
    reader = GGUFReader(ours)
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert reader.fields["tokenizer.ggml.pre"].contents() == "tekken"
    assert reader.fields["llama.attention.key_length"].contents() == 16
    assert_same_file(ours, theirs)


def test_mistral_nemos_whole_vocabulary_exports_as_the_converter_writes_it(tmp_path):
    model = tmp_path / "nemo-style"
    full = goldens.nemo_tokenizer(tmp_path / "convert")
    goldens.checkpoint(goldens.NEMO_STYLE, model, {
        "tokenizer.json": json.dumps(full, ensure_ascii=False),
        "tokenizer_config.json": (goldens.TEKKEN_OUT / "tokenizer_config.json").read_text(encoding="utf-8")})
    theirs, ours = tmp_path / "converter.gguf", tmp_path / "mixtune.gguf"
    done = goldens.convert(model, theirs, "f16")
    assert done.returncode == 0, done.stderr
    exported = mixtune("export-gguf", "--model", model, "--out", ours, "--type", "f16")
    assert exported.returncode == 0, exported.stderr
    assert GGUFReader(ours).fields["tokenizer.ggml.pre"].contents() == "tekken"
    assert_same_file(ours, theirs)


def test_a_mixtral_without_head_dim_exports_as_the_converter_writes_it(tmp_path):
    model = tmp_path / "mixtral-style"
    goldens.checkpoint(goldens.MIXTRAL_STYLE, model,
                       {name: (goldens.TEKKEN_OUT / name).read_text(encoding="utf-8") for name in TEKKEN_FILES})
    theirs, ours = tmp_path / "converter.gguf", tmp_path / "mixtune.gguf"
    done = goldens.convert(model, theirs, "f16")
    assert done.returncode == 0, done.stderr
    exported = mixtune("export-gguf", "--model", model, "--out", ours, "--type", "f16")
    assert exported.returncode == 0, exported.stderr
    assert "llama.attention.key_length" not in GGUFReader(ours).fields
    assert_same_file(ours, theirs)


def test_a_pre_tokenizer_the_converter_does_not_know_is_refused_by_both(tmp_path):
    model = tmp_path / "nemo-style"
    goldens.checkpoint(goldens.UNKNOWN_STYLE, model, {
        "tokenizer.json": goldens.TEKKEN_STYLE.read_text(encoding="utf-8"),
        "tokenizer_config.json": (goldens.TEKKEN_OUT / "tokenizer_config.json").read_text(encoding="utf-8")})
    theirs, ours = tmp_path / "converter.gguf", tmp_path / "mixtune.gguf"
    done = goldens.convert(model, theirs, "f16")
    assert done.returncode != 0 and "BPE pre-tokenizer was not recognized" in done.stderr
    chkhsh = done.stderr.split("** chkhsh:")[1].split()[0]
    exported = mixtune("export-gguf", "--model", model, "--out", ours)
    assert exported.returncode == 2, exported.stderr
    assert chkhsh in exported.stderr
    assert not theirs.exists() and not ours.exists()
