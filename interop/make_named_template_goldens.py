"""Which template transformers 5.18 renders for apply_chat_template(chat_template=NAME) on a model folder with named
templates in additional_chat_templates/, written to data-pipeline/src/test/resources/golden/hf-templates/named.json for
the Java test of `data.template: hf:NAME`.

The folder: make_hf_template_goldens.hub_tokenizer (configs/tokenizer/mistral-v1 with <unk> <s> </s> declared special),
chat_template.jinja = Mistral-7B-Instruct-v0.3's template, additional_chat_templates/chatml.jinja = OpenHermes-2.5's
ChatML and additional_chat_templates/zephyr.jinja = zephyr-7b-beta's (configs/chat-templates/). AutoTokenizer reads
them as the dict {"default", "chatml", "zephyr"} (tokenization_utils_base.from_pretrained: the .jinja files "take
priority over template entries in the tokenizer config"), and get_chat_template picks the named one.

named.json: "folder" (which file holds which template), "rows": per name and conversation (the first CONVERSATIONS of
make_hf_template_goldens that no template refuses) the ids of apply_chat_template(tokenize=True), and the cases without
a default: the same folder less chat_template.jinja, where transformers raises for a call without a name (also with a
chat_template string in tokenizer_config.json, which the files' dict replaces): "no_default" holds its message.

Run: interop/.venv/bin/python interop/make_named_template_goldens.py [out_file]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

import make_hf_template_goldens as hg

OUT_FILE = hg.OUT_DIR / "named.json"
# name in the folder -> template of configs/chat-templates/
FOLDER = {"default": "mistral-7b-instruct-v0.3", "chatml": "openhermes-2.5-chatml", "zephyr": "zephyr-7b-beta"}
CONVERSATION_COUNT = 8


def folder(directory: Path, with_default: bool, config_template: str | None = None) -> Path:
    hg.hub_tokenizer(directory)
    if config_template is not None:
        config = json.loads((directory / "tokenizer_config.json").read_text())
        config["chat_template"] = config_template
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    extra = directory / "additional_chat_templates"
    extra.mkdir()
    for name, source in FOLDER.items():
        if name == "default":
            if with_default:
                (directory / "chat_template.jinja").write_text(hg.template(source))
        else:
            (extra / f"{name}.jinja").write_text(hg.template(source))
    return directory


def build() -> dict:
    conversations = [(n, m) for n, m in hg.CONVERSATIONS if m[0]["role"] != "system" and n not in hg.TOOLS]
    conversations = conversations[:CONVERSATION_COUNT]
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = AutoTokenizer.from_pretrained(folder(Path(directory) / "named", True))
        if sorted(tokenizer.chat_template) != sorted(FOLDER):
            raise AssertionError(f"transformers read {sorted(tokenizer.chat_template)}, not {sorted(FOLDER)}")
        rows = []
        for name in FOLDER:
            for conversation, messages in conversations:
                ids = list(tokenizer.apply_chat_template(messages, chat_template=name, tokenize=True,
                                                         return_dict=True)["input_ids"])
                direct = list(tokenizer.apply_chat_template(messages, chat_template=hg.template(FOLDER[name]),
                                                            tokenize=True, return_dict=True)["input_ids"])
                if ids != direct:
                    raise AssertionError(f"{name}: the named template is not {FOLDER[name]}")
                rows.append({"template": name, "conversation": conversation, "messages": messages,
                             "input_ids": ids})
        unnamed = list(tokenizer.apply_chat_template(conversations[0][1], tokenize=True,
                                                     return_dict=True)["input_ids"])
        if unnamed != rows[0]["input_ids"]:
            raise AssertionError("a call without a name does not render the default")
        no_default = {}
        for case, config_template in (("files_only", None), ("tokenizer_config_string", hg.template(FOLDER["chatml"]))):
            bare = AutoTokenizer.from_pretrained(folder(Path(directory) / case, False, config_template))
            try:
                bare.apply_chat_template(conversations[0][1], tokenize=False)
                raise AssertionError(f"{case}: transformers rendered without a default")
            except ValueError as e:
                no_default[case] = str(e)
    return {"folder": {"chat_template.jinja": FOLDER["default"],
                       **{f"additional_chat_templates/{n}.jinja": t for n, t in FOLDER.items() if n != "default"}},
            "rows": rows, "no_default": no_default}


def write(out_file: Path = OUT_FILE) -> dict:
    built = build()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(built, ensure_ascii=False, indent=1) + "\n")
    return built


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_FILE)
