"""An adapter mixtune trains carries tokenizer.json and a tokenizer_config.json with the chat template it was trained
with: transformers loads that folder's tokenizer, and apply_chat_template (with return_assistant_tokens_mask, which
the {% generation %} blocks of mixtune's Jinja answer) gives the ids and trained tokens mixtune trained on, as
`mixtune data preview --dump` shows them, for the built-in mistral and chatml templates and for custom ones (ChatML
written as one, and "### User/### Bot" strings with BOS, a quote, a backslash and a carriage return)."""

import json
import os
import subprocess

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import hf_models as hf
import make_hf_template_goldens as hg

MIXTUNE = hf.repo_root() / "bin" / "mixtune"
IGNORE = hg.IGNORE
MAX_LEN = 2048


def run(*args):
    proc = subprocess.run([str(MIXTUNE), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mixtune {' '.join(args)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


CUSTOM = {
    "custom-chatml": dict(system_prefix="<|im_start|>system\n", system_suffix="<|im_end|>\n",
                          user_prefix="<|im_start|>user\n", user_suffix="<|im_end|>\n",
                          assistant_prefix="<|im_start|>assistant\n", assistant_suffix="<|im_end|>",
                          after_assistant="\n", bos=False, eos_after_assistant=False),
    "custom-quirky": dict(system_prefix="### System's rules\n", system_suffix="\n",
                          user_prefix="### User \\ 'asks'\r\n", user_suffix="\n", assistant_prefix="### Bot\n",
                          assistant_suffix="\n###", after_assistant="\n", bos=True, eos_after_assistant=False),
}


def template_keys(template):
    if template not in CUSTOM:
        return f"  template: {template}\n"
    # JSON strings are YAML double-quoted scalars
    return "  template: custom\n  custom_template:\n" + "".join(
        f"    {key}: {json.dumps(value)}\n" for key, value in CUSTOM[template].items())


@pytest.mark.parametrize("template", ["mistral", "chatml", *CUSTOM])
def test_adapter_tokenizer_applies_the_trained_template(tmp_path, template):
    if not os.access(MIXTUNE, os.X_OK):
        pytest.fail(f"{MIXTUNE} does not exist or is not executable")
    # the chats that fit max_seq_len whole (mixtune would drop trailing exchanges of the longest one); not the tool
    # chats (no built-in template has tools), nor for mistral the shapes mistral-common refuses (hg.SHAPES)
    refused = {n for n, m in hg.SHAPES if template == "mistral" or any(x["role"] == "tool" for x in m)}
    conversations = [m for n, m in hg.CONVERSATIONS
                     if n not in refused and sum(len(x["content"]) for x in m) < 4000]
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in conversations))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model:\n  preset: tiny-mistral\noutput_dir: {tmp_path / 'out'}\n"
                      f"data:\n  files: [{chats}]\n{template_keys(template)}  max_seq_len: {MAX_LEN}\n"
                      f"  packing: false\ntrain:\n  max_steps: 1\n  micro_batch_size: 1\n")
    run("train", "--recipe", str(recipe))
    dump = tmp_path / "dump.jsonl"
    run("data", "preview", "--recipe", str(recipe), "--n", "1000", "--dump", str(dump), "--color", "never")
    rows = [json.loads(line) for line in dump.read_text().splitlines() if "source" in json.loads(line)]
    assert len(rows) == len(conversations)

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "adapter")
    assert "{% generation %}" in tokenizer.chat_template
    for row in rows:
        messages = conversations[int(row["source"].rsplit(":", 1)[1]) - 1]
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        assert list(out["input_ids"]) == row["input_ids"], row["source"]
        labels = [t if m else IGNORE for t, m in zip(out["input_ids"], out["assistant_masks"])]
        assert labels == row["labels"], row["source"]


def test_a_template_transformers_saved_as_chat_template_jinja_is_the_models(tmp_path):
    """transformers 5's save_pretrained writes a tokenizer's template to chat_template.jinja and leaves none in
    tokenizer_config.json (as mergekit and `mixtune merge` write it too); AutoTokenizer reads that file first, and so
    does mixtune's `data.template: auto`: the ids it trains on are apply_chat_template's. Before, auto fell back to
    mistral on such a folder."""
    model = tmp_path / "model"
    run("init-model", "--preset", "tiny-mistral", "--out", str(model))
    # AutoTokenizer would pick mistral-common for a Mistral model folder; the fast tokenizer is what it saves
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model)
    tokenizer.chat_template = (hf.repo_root() / "configs" / "chat-templates" / "openhermes-2.5-chatml.jinja").read_text()
    tokenizer.save_pretrained(model)
    assert (model / "chat_template.jinja").is_file()
    assert "chat_template" not in json.loads((model / "tokenizer_config.json").read_text())

    conversations = [[{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"},
                      {"role": "assistant", "content": "6"}]]
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model:\n  path: {model}\noutput_dir: {tmp_path / 'out'}\n"
                      f"data:\n  files: [{chats}]\n  template: auto\n  packing: false\n")
    dump = tmp_path / "dump.jsonl"
    run("data", "preview", "--recipe", str(recipe), "--n", "10", "--dump", str(dump), "--color", "never")
    rows = [json.loads(line) for line in dump.read_text().splitlines() if "source" in json.loads(line)]
    assert len(rows) == len(conversations)
    for row, messages in zip(rows, conversations, strict=True):
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        assert list(ids) == row["input_ids"], row["source"]
        assert any(label != IGNORE for label in row["labels"])
