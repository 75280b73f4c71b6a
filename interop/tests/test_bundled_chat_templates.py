"""mixtune's text of mergekit's bundled chat templates renders, with transformers' jinja2 (what apply_chat_template
runs), what mergekit's own files render: the renderings in bundled_chat_templates.json, made from mergekit's files by
make_bundled_template_goldens.py. BundledChatTemplatesTest checks the same with Jinjava, as mixtune renders."""

import json

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

import make_bundled_template_goldens as goldens

GOLDEN = json.loads(goldens.OUT.read_text())
TEMPLATES = goldens.REPO / "merging" / "src" / "main" / "resources" / "io" / "mixtune" / "merging" / "chat_templates"


@pytest.mark.parametrize("name", goldens.NAMES)
def test_mixtunes_text_renders_as_mergekits(name):
    template = (TEMPLATES / f"{name}.jinja").read_text()
    for conversation, expected in zip(GOLDEN["conversations"], GOLDEN["renderings"][name], strict=True):
        for generation_prompt, want in zip([False, True], expected, strict=True):
            try:
                rendered, _ = render_jinja_template([conversation], chat_template=template,
                                                    add_generation_prompt=generation_prompt,
                                                    bos_token=GOLDEN["bos_token"], eos_token=GOLDEN["eos_token"])
                got = rendered[0]
            except Exception as e:
                assert type(e).__name__ == "TemplateError", e
                got = None
            assert got == want, (name, conversation, generation_prompt)


def test_the_golden_conversations_are_the_scripts():
    assert GOLDEN["conversations"] == goldens.CONVERSATIONS and sorted(GOLDEN["renderings"]) == goldens.NAMES
