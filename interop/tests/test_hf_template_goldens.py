"""The committed Hugging Face chat template goldens are what make_hf_template_goldens.py builds today from transformers'
apply_chat_template, and each template trains something on every conversation it renders."""

import json

import make_hf_template_goldens as hg

IGNORE = hg.IGNORE


def test_fresh_build_equals_committed_files(tmp_path):
    hg.write(tmp_path)
    names = ["conversations.jsonl"] + [f"{n}.jsonl" for n in hg.NAMES] + [f"{n}.generation.jinja" for n in hg.NAMES]
    for name in names:
        assert (tmp_path / name).read_bytes() == (hg.OUT_DIR / name).read_bytes(), name


def test_every_template_renders_twenty_conversations_and_those_that_refuse_a_system_message_raise():
    conversations = [json.loads(line) for line in (hg.OUT_DIR / "conversations.jsonl").read_text().splitlines()]
    assert len(conversations) >= 20
    for name in hg.NAMES:
        rows = [json.loads(line) for line in (hg.OUT_DIR / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == len(conversations)
        rendered = [r for r in rows if "error" not in r]
        assert len(rendered) >= 20, name
        for row in rendered:
            assert len(row["input_ids"]) == len(row["labels"])
            assert any(label != IGNORE for label in row["labels"])
        with_system = [r for r, c in zip(rows, conversations) if c["messages"][0]["role"] == "system"]
        assert with_system
        if name in hg.RAISES_ON_SYSTEM:
            assert all("error" in r for r in with_system), name
        else:
            assert not any("error" in r for r in with_system), name
