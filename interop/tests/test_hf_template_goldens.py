"""The committed Hugging Face chat template goldens are what make_hf_template_goldens.py builds today from transformers'
apply_chat_template, and each template trains something on every conversation it renders."""

import json

import make_hf_template_goldens as hg

IGNORE = hg.IGNORE


def test_fresh_build_equals_committed_files(tmp_path):
    hg.write(tmp_path)
    names = ["conversations.jsonl"] + [f"{n}.jsonl" for n in hg.NAMES] + [f"{n}.generation.jinja" for n in hg.NAMES]
    names += [f"no-bos/{n}.jsonl" for n in (*hg.NO_BOS_TEMPLATES, "mistral", "texts")]
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


def test_a_tokenizer_without_bos_renders_the_ordinary_ids_less_the_leading_bos():
    """bos_token null: the templates that begin with {{ bos_token }} give the ordinary model's ids without the 1 in
    front; plain text keeps the post-processor's <s> and has none without it."""
    for name in ("mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.3"):
        ordinary = [json.loads(line) for line in (hg.OUT_DIR / f"{name}.jsonl").read_text().splitlines()]
        no_bos = [json.loads(line) for line in (hg.OUT_DIR / "no-bos" / f"{name}.jsonl").read_text().splitlines()]
        for row, bare in zip(ordinary, no_bos):
            if "error" in row:
                assert "error" in bare
                continue
            assert row["input_ids"][0] == 1 and bare["input_ids"] == row["input_ids"][1:], name
            assert bare["prompt_ids"] == row["prompt_ids"][1:], name
    for line in (hg.OUT_DIR / "no-bos" / "texts.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert row["post_processor"] == [1] + row["no_post_processor"], row["text"]
