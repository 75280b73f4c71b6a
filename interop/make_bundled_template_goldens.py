"""Writes merging/src/test/resources/chat_templates/bundled_chat_templates.json (beside golden/, which
make_merge_goldens.py owns whole): what mergekit's bundled chat templates
(mergekit/_data/chat_templates/NAME.jinja, which merge.py's _set_chat_template sets for `chat_template: NAME`) render
for a few conversations, with transformers' render_jinja_template (what apply_chat_template runs: trim_blocks,
lstrip_blocks, raise_exception), bos_token <s>, eos_token </s>, without and with add_generation_prompt.

Only the renderings are stored, never mergekit's template text (LGPL-3.0): mixtune ships its own text for each name
(merging/src/main/resources/io/mixtune/merging/chat_templates/), and BundledChatTemplatesTest (Jinjava, as mixtune
renders) and interop/tests/test_bundled_chat_templates.py (jinja2) hold it to these renderings.

Run: interop/.venv/bin/python interop/make_bundled_template_goldens.py MERGEKIT_CHECKOUT [COMMIT]
  MERGEKIT_CHECKOUT: a clone of github.com/arcee-ai/mergekit (a bare one too); COMMIT (default HEAD) is read with
  git show and recorded. The committed file was made from commit a6e4028 (2026-06-17).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from transformers.utils.chat_template_utils import render_jinja_template

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "merging" / "src" / "test" / "resources" / "chat_templates" / "bundled_chat_templates.json"
NAMES = ["alpaca", "chatml", "exaone", "llama3", "mistral"]
BOS, EOS = "<s>", "</s>"

# Each template's branches: a lone user turn, a system turn first, spaces and newlines a template trims or keeps, an
# assistant turn last (alpaca's generation prompt), alpaca's user_context, a system turn later and a tool turn
# (alpaca keeps the last system, mistral refuses), roles out of order (mistral refuses), a system turn alone.
CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " What is 2+2? "},
     {"role": "assistant", "content": "4\n"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
     {"role": "user_context", "content": " ctx "}, {"role": "assistant", "content": "a"}],
    [{"role": "system", "content": " first "}, {"role": "user", "content": "x"},
     {"role": "system", "content": " second\n"}, {"role": "tool", "content": "t"}],
    [{"role": "assistant", "content": "starts"}, {"role": "user", "content": "u"}],
    [{"role": "system", "content": "only"}],
]


def render(template: str, conversation: list, generation_prompt: bool) -> str | None:
    """The rendered text, or None where the template raises (mistral's raise_exception)."""
    try:
        rendered, _ = render_jinja_template([conversation], chat_template=template,
                                            add_generation_prompt=generation_prompt, bos_token=BOS, eos_token=EOS)
    except Exception as e:  # jinja2.TemplateError from raise_exception
        if type(e).__name__ != "TemplateError":
            raise
        return None
    return rendered[0]


def main() -> None:
    checkout, commit = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "HEAD"
    sha = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", commit], capture_output=True, text=True,
                         check=True).stdout.strip()
    renderings = {}
    for name in NAMES:
        template = subprocess.run(["git", "-C", str(checkout), "show",
                                   f"{commit}:mergekit/_data/chat_templates/{name}.jinja"],
                                  capture_output=True, text=True, check=True).stdout
        renderings[name] = [[render(template, c, False), render(template, c, True)] for c in CONVERSATIONS]
    golden = {"mergekit_commit": sha, "bos_token": BOS, "eos_token": EOS, "conversations": CONVERSATIONS,
              "renderings": renderings}
    OUT.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT.relative_to(REPO)} from mergekit {sha}")


if __name__ == "__main__":
    main()
