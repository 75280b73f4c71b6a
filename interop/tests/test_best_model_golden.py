"""The committed best-model golden is what make_best_model_goldens.py builds today from transformers' own code."""

import make_best_model_goldens as bg


def test_fresh_build_equals_committed_file(tmp_path):
    bg.write(tmp_path / "cases.json")
    assert (tmp_path / "cases.json").read_bytes() == bg.OUT.read_bytes()
