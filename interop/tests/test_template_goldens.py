"""The committed chat template goldens are what make_template_goldens.py builds today, and they keep the invariants the
Java data pipeline relies on: labels align with input_ids, every assistant turn trains, nothing else does, and the
recipes the Java follows on tokenizer.json give them on every conversation."""

import json

import pytest
import sentencepiece
from tokenizers import Tokenizer

import make_template_goldens as tg

IGNORE = tg.IGNORE


def read(directory, name):
    return [json.loads(line) for line in (directory / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def golden():
    return {name: read(tg.OUT_DIR, name) for name in tg.FILES}


@pytest.fixture(scope="module")
def fast():
    return Tokenizer.from_file(str(tg.TOKENIZER_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def sp():
    return sentencepiece.SentencePieceProcessor(model_file=str(tg.TOKENIZER_DIR / "tokenizer.model"))


def trained_runs(labels):
    """[start, end) of each maximal run of trained positions."""
    runs, start = [], None
    for i, label in enumerate(labels + [IGNORE]):
        if label != IGNORE and start is None:
            start = i
        elif label == IGNORE and start is not None:
            runs.append((start, i))
            start = None
    return runs


def assistants(conversation):
    return [m["content"] for m in conversation["messages"] if m["role"] == "assistant"]


def test_fresh_build_equals_committed_files(tmp_path):
    tg.write(tmp_path)
    for name in tg.FILES:
        assert (tmp_path / name).read_bytes() == (tg.OUT_DIR / name).read_bytes(), name


def test_conversation_set(golden):
    conversations = golden["conversations.jsonl"]
    assert len(conversations) == len(tg.CONVERSATIONS) >= 36
    assert all(len(read(tg.OUT_DIR, name)) == len(conversations) for name in tg.FILES)
    for c in conversations:
        roles = [m["role"] for m in c["messages"] if m["role"] != "system"]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and 1 <= len(roles) // 2 <= 5
    systems = [m["content"] for c in conversations for m in c["messages"] if m["role"] == "system"]
    assert "" in systems and len(systems) >= 4
    assert max(len(m["content"]) for c in conversations for m in c["messages"]) >= 3000


@pytest.mark.parametrize("name", ["mistral.jsonl", "chatml.jsonl"])
def test_labels_align_with_input_ids(golden, name):
    for row in golden[name]:
        assert len(row["labels"]) == len(row["input_ids"])
        assert all(label in (IGNORE, token) for token, label in zip(row["input_ids"], row["labels"]))


def test_mistral_every_assistant_turn_trains_content_and_eos(golden):
    for conversation, row in zip(golden["conversations.jsonl"], golden["mistral.jsonl"]):
        ids, labels = row["input_ids"], row["labels"]
        assert ids[0] == tg.BOS and labels[0] == IGNORE and ids[-1] == labels[-1] == tg.EOS
        runs = trained_runs(labels)
        assert len(runs) == len(assistants(conversation))
        # Each run is one assistant turn, closed by its EOS. BOS and EOS come only from the template, never from a
        # "<s>" or "</s>" typed in a message.
        assert all(ids[end - 1] == tg.EOS for _, end in runs)
        assert ids.count(tg.EOS) == len(runs) and ids.count(tg.BOS) == 1


def test_special_tokens_typed_as_text_stay_text(golden):
    typed = [line for line, c in enumerate(golden["conversations.jsonl"], start=1)
             if any(s in m["content"] for m in c["messages"] for s in ("<s>", "</s>", "<unk>"))]
    assert len(typed) >= 3
    for line in typed:
        for name in ("mistral.jsonl", "chatml.jsonl"):
            ids = golden[name][line - 1]["input_ids"]
            assert 0 not in ids and ids.count(tg.BOS) == (name == "mistral.jsonl"), (name, line)


def test_mistral_is_sentencepiece_turn_by_turn(golden, sp):
    """Rebuilds mistral.jsonl from plain sentencepiece encodes of the texts mistral-common builds per turn: one encode
    (with its dummy-prefix "▁") per segment, BOS first, EOS after every assistant turn, nothing stripped."""
    reference = tg.MistralReference()
    for (_, messages), row in zip(tg.CONVERSATIONS, golden["mistral.jsonl"]):
        ids, labels = [tg.BOS], [IGNORE]
        for role, text in reference.segments(messages):
            piece = sp.encode(text)
            trains = role == "assistant"
            ids += piece + [tg.EOS] * trains
            labels += piece + [tg.EOS] if trains else [IGNORE] * len(piece)
        assert row == {"input_ids": ids, "labels": labels}
        trained = sum(len(sp.encode(a)) + 1 for a in assistants({"messages": messages}))
        assert sum(label != IGNORE for label in row["labels"]) == trained


def test_mistral_system_prompt_and_whitespace(golden):
    reference = tg.MistralReference()
    conversations = dict(tg.CONVERSATIONS)
    # An empty system prompt is dropped, not turned into "\n\n".
    empty = conversations["empty-system"]
    assert reference.encode(empty) == reference.encode(empty[1:])
    # The system prompt, unstripped, goes in front of the first user turn only.
    segments = reference.segments(conversations["system-with-spaces"])
    assert segments == [("user", "[INST]   Be helpful.  \n\n\n Hi  [/INST]"), ("assistant", " Hello ")]
    users = [text for role, text in reference.segments(conversations["system-three-turns"]) if role == "user"]
    assert users[0].startswith("[INST] You are a pirate.") and users[0].endswith("\n\nHi! [/INST]")
    assert all("pirate" not in text for text in users[1:])


def test_mistral_turn_by_turn_on_tokenizer_json_is_mistral_common(golden, fast):
    """What MistralTemplate does in Java: one encode per segment with the tokenizers library, BOS/EOS by id."""
    reference = tg.MistralReference()
    for (_, messages), row in zip(tg.CONVERSATIONS, golden["mistral.jsonl"]):
        assert tg.mistral_by_segments(fast, reference.segments(messages)) == row


def test_chatml_trains_assistant_content_and_im_end(golden, fast):
    tokenizer = fast
    im_end = tg.encode_continuation(tokenizer, "<|im_end|>")
    for conversation, row in zip(golden["conversations.jsonl"], golden["chatml.jsonl"]):
        ids, labels = row["input_ids"], row["labels"]
        assert ids[0] != tg.BOS
        runs = trained_runs(labels)
        assert len(runs) == len(assistants(conversation))
        for start, end in runs:
            # Closed by <|im_end|> (its first piece may have merged with the content's last character, as ".<"),
            # then an untrained "\n" (<0x0A>), and opened right after the "\n" of "<|im_start|>assistant\n".
            assert ids[end - len(im_end) + 1 : end] == im_end[1:]
            assert ids[end] == 13 and ids[start - 1] == 13
        trained = sum(len(tg.encode_continuation(tokenizer, a + "<|im_end|>")) for a in assistants(conversation))
        assert sum(label != IGNORE for label in labels) == trained


def test_chatml_segment_recipe_reproduces_apply_chat_template(golden, fast):
    for conversation, row in zip(golden["conversations.jsonl"], golden["chatml.jsonl"]):
        assert tg.chatml_by_segments(fast, conversation["messages"]) == row


def test_chatml_is_sentencepiece_on_the_rendered_text(golden, sp):
    for conversation, row in zip(golden["conversations.jsonl"], golden["chatml.jsonl"]):
        rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation["messages"])
        assert row["input_ids"] == sp.encode(rendered)
