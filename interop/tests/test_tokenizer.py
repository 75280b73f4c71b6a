"""The committed tokenizer.json must tokenize ordinary text exactly as Mistral's SentencePiece model does."""

import hashlib
import importlib.resources
import json
from pathlib import Path

import pytest
import sentencepiece
from tokenizers import Tokenizer
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "configs" / "tokenizer" / "mistral-v1"
GOLDEN = REPO / "model" / "src" / "test" / "resources" / "golden" / "tokenizer" / "mistral-v1-ids.json"


@pytest.fixture(scope="module")
def golden():
    entries = json.loads(GOLDEN.read_text())
    assert len(entries) >= 20
    return entries


def mismatches(encode, entries):
    return [(e["text"], e["ids"], got) for e in entries if (got := encode(e["text"])) != e["ids"]]


def test_goldens_are_sentencepiece_with_bos(golden):
    sp = sentencepiece.SentencePieceProcessor(model_file=str(TOKENIZER_DIR / "tokenizer.model"))
    assert mismatches(lambda t: [sp.bos_id()] + sp.encode(t), golden) == []


def test_tokenizers_library_matches_sentencepiece(golden):
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    assert mismatches(lambda t: tok.encode(t).ids, golden) == []


def test_transformers_matches_sentencepiece(golden):
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    assert tok.is_fast
    assert mismatches(lambda t: tok(t)["input_ids"], golden) == []


def test_special_tokens():
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    assert len(tok) == 32000
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("")["input_ids"] == [1]


def test_committed_model_is_mistral_common_v1():
    shipped = importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    digest = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    assert digest((TOKENIZER_DIR / "tokenizer.model").read_bytes()) == digest(shipped.read_bytes())
