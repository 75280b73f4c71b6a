"""The committed tokenizer.json must tokenize every text exactly as Mistral's SentencePiece model does, in the
tokenizers library (what mixtune's Java runs through DJL) and in transformers."""

import hashlib
import importlib.resources
import json
from pathlib import Path

import pytest
import sentencepiece
from tokenizers import Tokenizer
from transformers import AutoTokenizer

import convert_tokenizer
import tokenizer_texts

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "configs" / "tokenizer" / "mistral-v1"
GOLDEN = REPO / "model" / "src" / "test" / "resources" / "golden" / "tokenizer" / "mistral-v1-ids.json"


@pytest.fixture(scope="module")
def golden():
    entries = json.loads(GOLDEN.read_text())
    assert [e["text"] for e in entries] == tokenizer_texts.GOLDEN_TEXTS + tokenizer_texts.random_texts(
        tokenizer_texts.GOLDEN_RANDOM, tokenizer_texts.GOLDEN_SEED)
    return entries


@pytest.fixture(scope="module")
def sp():
    return sentencepiece.SentencePieceProcessor(model_file=str(TOKENIZER_DIR / "tokenizer.model"))


@pytest.fixture(scope="module")
def fast():
    return Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def corpus():
    texts = tokenizer_texts.corpus()
    assert len(texts) >= 20_000
    return texts


def mismatches(encode, entries):
    return [(e["text"], e["ids"], got) for e in entries if (got := encode(e["text"])) != e["ids"]]


def test_goldens_are_sentencepiece_with_bos(golden, sp):
    assert mismatches(lambda t: [sp.bos_id()] + sp.encode(t), golden) == []


def test_tokenizers_library_matches_sentencepiece(golden, fast):
    assert mismatches(lambda t: fast.encode(t).ids, golden) == []


def test_transformers_matches_sentencepiece(golden):
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    assert tok.is_fast
    assert mismatches(lambda t: tok(t)["input_ids"], golden) == []


def test_tokenizer_json_equals_sentencepiece_on_the_corpus(corpus):
    assert convert_tokenizer.disagreements(TOKENIZER_DIR / "tokenizer.json", TOKENIZER_DIR / "tokenizer.model",
                                           corpus) == []


def test_decode_equals_sentencepiece_on_the_corpus(corpus, sp, fast):
    """The decoder (Replace "▁", ByteFallback, Fuse, Strip the dummy-prefix space) on sentencepiece's ids; BOS and
    EOS, which sentencepiece drops as control pieces, are dropped by TextTokenizer.decode before this runs."""
    assert [t for t in corpus if fast.decode(ids := sp.encode(t)) != sp.decode(ids)] == []


def test_special_tokens():
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    assert len(tok) == 32000
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("")["input_ids"] == [1]
    # Typed as text they are characters, as sentencepiece has them; decode still drops them as ids.
    assert not {0, 1, 2} & set(tok("<unk> <s> </s><s>")["input_ids"][1:])
    assert tok.decode([1, 22557, 2], skip_special_tokens=True) == "Hello"


def test_committed_files_are_what_convert_writes(tmp_path):
    out = convert_tokenizer.convert(tmp_path / "mistral-v1")
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        assert (out / name).read_bytes() == (TOKENIZER_DIR / name).read_bytes(), name


def test_committed_model_is_mistral_common_v1():
    shipped = importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    digest = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    assert digest((TOKENIZER_DIR / "tokenizer.model").read_bytes()) == digest(shipped.read_bytes())


def test_hub_llama_tokenizer_class_differs_from_sentencepiece_only_on_leading_whitespace(golden, sp, tmp_path):
    """Mistral's Hub repositories name tokenizer_class LlamaTokenizer in tokenizer_config.json; transformers 5.18 then
    rebuilds the normalizer and pre-tokenizer from its own rules instead of running tokenizer.json as written. mixtune
    runs the file as written (the tokenizers library, PreTrainedTokenizerFast), which equals sentencepiece; the
    rebuilt one drops a space from text that starts with whitespace (or "▁"), and agrees on all other text."""
    import make_tokenizer_variant_goldens as variants

    bundled = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps(dict(bundled, **variants.VARIANTS["hub-v0.1-legacy"])))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "clean_up_tokenization_spaces": False}))
    as_written = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    as_written.encode_special_tokens = True
    rebuilt = AutoTokenizer.from_pretrained(tmp_path, split_special_tokens=True)
    texts = [e["text"] for e in golden]
    assert [t for t in texts if as_written.encode(t, add_special_tokens=False).ids != sp.encode(t)] == []
    differ = [t for t in texts if rebuilt(t, add_special_tokens=False)["input_ids"] != sp.encode(t)]
    assert differ, "transformers now runs the file as written: README's sentence on LlamaTokenizer is stale"
    assert [t for t in differ if not (t[:1].isspace() or t.startswith("▁"))] == []
