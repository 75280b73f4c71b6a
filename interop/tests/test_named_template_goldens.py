"""The committed named-template golden is what make_named_template_goldens.py builds today from transformers'
apply_chat_template(chat_template=NAME) on a folder with additional_chat_templates/."""

import make_named_template_goldens as ng


def test_fresh_build_equals_committed_file(tmp_path):
    ng.write(tmp_path / "named.json")
    assert (tmp_path / "named.json").read_bytes() == ng.OUT_FILE.read_bytes()


def test_every_name_renders_each_conversation_and_a_folder_without_default_names_its_templates():
    built = ng.build()
    assert {r["template"] for r in built["rows"]} == set(ng.FOLDER)
    assert len(built["rows"]) == len(ng.FOLDER) * ng.CONVERSATION_COUNT
    for message in built["no_default"].values():
        assert "no default specified" in message and "['chatml', 'zephyr']" in message
