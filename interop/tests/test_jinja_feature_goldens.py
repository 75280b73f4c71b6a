"""The committed Jinja feature goldens are what make_jinja_feature_goldens.py builds today from transformers' jinja2."""

import make_jinja_feature_goldens as jf


def test_fresh_build_equals_committed_file(tmp_path):
    out = tmp_path / "jinja-features.jsonl"
    jf.write(out)
    assert out.read_bytes() == jf.OUT_FILE.read_bytes()
