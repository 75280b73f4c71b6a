"""bin/mixtune data preview --dump against references built here, turn by turn, on tricky conversations.

Contract: `mixtune data preview --recipe R --n N --dump FILE --color never --cache-dir DIR` writes one JSON line per
training sample, the first N in file order: {"source": "file:line", "input_ids", "labels" (-100 untrained),
"position_ids"}, then the rows those samples pack into ({"packed_row", ..., "sample_ids"}). The recipes here hold
no validation split (the default), so every valid conversation is a sample.

References:
- mistral: sentencepiece on the texts mistral-common's InstructTokenizerV1 builds per message (BOS, then per exchange
  "[INST] user [/INST]" untrained and the assistant text + EOS trained), as test_template_goldens checks against
  mistral-common itself; and the same pieces with the tokenizers library on tokenizer.json, what the Java can reach
  today.
- chatml: transformers' apply_chat_template ids, labels from its own return_assistant_tokens_mask.
- truncation (max_seq_len 256): the rule mixtune documents, applied to the reference: keep the longest run of whole
  exchanges that fits; when not even the first fits, keep its first max_seq_len tokens; when that holds no trained
  token, the conversation is skipped.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import sentencepiece
from transformers import AutoTokenizer

import hf_models as hf
import make_template_goldens as tg
from test_template_goldens import trained_runs

MIXTUNE = hf.repo_root() / "bin" / "mixtune"
IGNORE = tg.IGNORE
SHORT = 256

def _long(n: int) -> str:
    return " ".join(f"Step {i}: stir the sauce, taste it, and add salt if it needs some." for i in range(n))


# The template goldens' 30 (unicode, code blocks, spaces, empty and spaced system prompts, "</s>" typed, long turns),
# and a few that truncation treats differently at max_seq_len 256.
CONVERSATIONS = list(tg.CONVERSATIONS) + [
    ("trailing-turns-dropped", tg._turns("Short question?", "Short answer.", "Now a long one: " + _long(30), "ok.")),
    ("long-first-answer-cut", tg._system("", "Explain the recipe.", _long(40))),
    ("eos-and-spaces", tg._turns("  Say </s>twice  ", " </s>and</s> ")),
]
NAMES = [name for name, _ in CONVERSATIONS]


def truncate(row: dict, max_len: int):
    """mixtune's truncation on a reference, from where each exchange ends: after its trained run (the last exchange
    owns the rest). None when nothing trained fits."""
    ids, labels = row["input_ids"], row["labels"]
    runs = trained_runs(labels)
    ends = [end for _, end in runs[:-1]] + [len(ids)]
    kept = 0
    while kept < len(ends) and ends[kept] <= max_len:
        kept += 1
    cut = ends[kept - 1] if kept else max_len
    out = {"input_ids": ids[:cut], "labels": labels[:cut]}
    return out if any(label != IGNORE for label in out["labels"]) else None


def run_preview(tmp: Path, template: str, max_len: int, extra: str = "") -> dict[str, dict]:
    if not os.access(MIXTUNE, os.X_OK):
        pytest.fail(f"{MIXTUNE} does not exist or is not executable")
    chats = tmp / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for _, m in CONVERSATIONS))
    recipe = tmp / "recipe.yaml"
    recipe.write_text(f"model:\n  preset: tiny-mistral\noutput_dir: {tmp / 'out'}\n"
                      f"data:\n  files: [{chats}]\n  template: {template}\n  max_seq_len: {max_len}\n{extra}")
    dump = tmp / "dump.jsonl"
    cmd = [str(MIXTUNE), "data", "preview", "--recipe", str(recipe), "--n", "1000", "--dump", str(dump),
           "--color", "never", "--cache-dir", str(tmp / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    rows, packed = {}, []
    for line in dump.read_text().splitlines():
        row = json.loads(line)
        if "packed_row" in row:
            packed.append(row)
            continue
        assert row["position_ids"] == list(range(len(row["input_ids"])))
        rows[NAMES[int(row["source"].rsplit(":", 1)[1]) - 1]] = row
    # packing is on (the default): the rows hold each sample once, positions restarting, its first label dropped.
    in_rows = []
    for row in packed:
        assert len(row["input_ids"]) == max_len
        for s in sorted(set(row["sample_ids"]) - {-1}):
            at = [i for i, owner in enumerate(row["sample_ids"]) if owner == s]
            assert [row["position_ids"][i] for i in at] == list(range(len(at)))
            in_rows.append(([row["input_ids"][i] for i in at], [row["labels"][i] for i in at]))
    assert sorted(in_rows) == sorted((r["input_ids"], [IGNORE] + r["labels"][1:]) for r in rows.values())
    return {"rows": rows, "stdout": proc.stdout}


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    out = {}
    for template, extra in [("mistral", ""), ("chatml", ""),
                            ("custom", "  custom_template:\n" + "".join(
                                f"    {key}: {json.dumps(value)}\n" for key, value in {
                                    "system_prefix": "<|im_start|>system\n", "system_suffix": "<|im_end|>\n",
                                    "user_prefix": "<|im_start|>user\n", "user_suffix": "<|im_end|>\n",
                                    "assistant_prefix": "<|im_start|>assistant\n", "assistant_suffix": "<|im_end|>",
                                    "after_assistant": "\n", "bos": False, "eos_after_assistant": False}.items()))]:
        for max_len in (4096, SHORT):
            out[template, max_len] = run_preview(tmp_path_factory.mktemp(f"{template}-{max_len}"), template, max_len,
                                                 extra)
    return out


@pytest.fixture(scope="module")
def references():
    mistral = tg.MistralReference()
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tg.TOKENIZER_DIR / "tokenizer.model"))
    transformers = AutoTokenizer.from_pretrained(tg.TOKENIZER_DIR)
    out = {"sentencepiece": {}, "chatml": {}}
    for name, messages in CONVERSATIONS:
        ids, labels = [tg.BOS], [IGNORE]
        for role, text in mistral.segments(messages):
            piece = sp.encode(text) + [tg.EOS] * (role == "assistant")
            ids += piece
            labels += piece if role == "assistant" else [IGNORE] * len(piece)
        out["sentencepiece"][name] = {"input_ids": ids, "labels": labels}
        out["chatml"][name] = tg.chatml_reference(transformers, messages)
    # The turn-by-turn sentencepiece build is mistral-common's own encoding (here on the conversations that are new).
    for name, messages in CONVERSATIONS[len(tg.CONVERSATIONS):]:
        assert mistral.encode(messages) == out["sentencepiece"][name], name
    return out


def expected(reference: dict, max_len: int):
    return reference if max_len == 4096 else truncate(reference, max_len)


def check(dumped: dict, reference: dict, max_len: int, name: str):
    want = expected(reference, max_len)
    if want is None:
        assert name not in dumped, f"{name}: nothing trained fits {max_len} tokens, so no sample"
        return
    got = dumped[name]
    assert got["input_ids"] == want["input_ids"], name
    assert got["labels"] == want["labels"], name


def params(xfail_names, mark):
    return [pytest.param(name, max_len, marks=[mark] if name in xfail_names else [])
            for max_len in (4096, SHORT) for name in NAMES]


@pytest.mark.parametrize("name,max_len", params(set(), None))
def test_mistral_equals_sentencepiece_turn_by_turn(dumps, references, name, max_len):
    check(dumps["mistral", max_len]["rows"], references["sentencepiece"][name], max_len, name)


@pytest.mark.parametrize("template", ["chatml", "custom"])
@pytest.mark.parametrize("name,max_len", params(set(), None))
def test_chatml_equals_apply_chat_template_and_its_assistant_mask(dumps, references, template, name, max_len):
    check(dumps[template, max_len]["rows"], references["chatml"][name], max_len, name)


def test_truncation_cases_and_report(dumps):
    """At 256 tokens the long conversations are cut as the rule says, and the report counts each kind."""
    rows = dumps["mistral", SHORT]["rows"]
    assert "long-turn" not in rows  # a 700-token first prompt: nothing to learn, skipped
    assert len(rows["long-first-answer-cut"]["input_ids"]) == SHORT
    dropped = rows["trailing-turns-dropped"]
    assert dropped["labels"][-1] == tg.EOS and len(trained_runs(dropped["labels"])) == 1
    stdout = dumps["mistral", SHORT]["stdout"]
    assert f"train: {len(CONVERSATIONS) - 1} samples" in stdout
    assert "skipped 1: 1 no target left after truncation;" in stdout
    assert f"train: {len(CONVERSATIONS)} samples" in dumps["mistral", 4096]["stdout"]


def test_preview_marks_every_trained_run(dumps):
    """The plain-text preview opens one ⟦ per trained run of the dumped labels and prints each sample's counts."""
    for key in [("mistral", 4096), ("chatml", SHORT)]:
        stdout, rows = dumps[key]["stdout"], dumps[key]["rows"]
        assert stdout.count("⟦") == stdout.count("⟧") == sum(len(trained_runs(r["labels"])) for r in rows.values())
        for row in rows.values():
            trained = sum(label != IGNORE for label in row["labels"])
            assert f"): {len(row['input_ids']):,} tokens, {trained:,} trained\n" in stdout
