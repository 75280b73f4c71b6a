"""The committed `mixtune eval` goldens (trainer/src/test/resources/golden/eval) are what make_eval_goldens.py produces
today: the same four chats byte for byte, and transformers' and PEFT's losses on them (rel 1e-5). Generating them also
checks what they rest on (make_eval_goldens.py asserts each): the chats are longer than tiny-mistral's sliding window
and none is cut at max_seq_len, and the random adapter moves the loss.
"""

import json

import make_eval_goldens as goldens
from test_sft_goldens import numbers_close


def test_committed_eval_golden_reproduces(tmp_path):
    fresh = tmp_path / "eval"
    goldens.write(fresh)
    committed = goldens.EVAL_GOLDEN
    assert sorted(p.name for p in fresh.iterdir()) == sorted(p.name for p in committed.iterdir())
    assert (fresh / "chats.jsonl").read_bytes() == (committed / "chats.jsonl").read_bytes()
    numbers_close(json.loads((fresh / "expected.json").read_text()),
                  json.loads((committed / "expected.json").read_text()), "expected.json")
