"""The committed KTO goldens (trainer/src/test/resources/golden/kto and
data-pipeline/src/test/resources/golden/preference/trl-kto-tokenized.json) are what make_kto_goldens.py produces today,
and they cover every loss type TRL 1.13's KTOTrainer offers."""

import json

import make_kto_goldens as kto
from test_sft_goldens import assert_same_goldens


def test_committed_kto_goldens_reproduce(tmp_path):
    kto.write_goldens(tmp_path / "kto", tmp_path / "trl-kto-tokenized.json")
    step = {f"step/{name}" for name in ("expected.json", *(f"grads_{n}.safetensors" for n in kto.STEPS))}
    assert_same_goldens(tmp_path / "kto", kto.KTO_GOLDEN, {"losses.json", *step})
    assert (tmp_path / "trl-kto-tokenized.json").read_bytes() == kto.TOKENIZED.read_bytes()


def test_every_trl_kto_loss_type_has_a_golden():
    from trl import KTOConfig
    from dataclasses import fields

    choices = next(f for f in fields(KTOConfig) if f.name == "loss_type").metadata["choices"]
    losses = json.loads(kto.KTO_GOLDEN.joinpath("losses.json").read_text())
    assert set(choices) == {c["loss_type"] for c in losses.values()}
    assert set(choices) == {loss for loss, _, _ in kto.STEPS.values()}
