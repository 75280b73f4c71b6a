"""The committed sampling golden is what make_sampling_goldens.py builds today from transformers' logits processors."""

import make_sampling_goldens as sg


def test_fresh_build_equals_committed_file(tmp_path):
    sg.write(tmp_path / "warpers.json")
    assert (tmp_path / "warpers.json").read_bytes() == sg.OUT.read_bytes()
