"""The committed ORPO, CPO and SimPO goldens (trainer/src/test/resources/golden/orpo and
data-pipeline/src/test/resources/golden/preference/trl-orpo-tokenized.json) are what make_orpo_goldens.py produces
today, and they cover every loss type TRL 1.13's experimental CPOTrainer offers (alphapo is simpo with cpo_alpha 0)."""

import json

import make_orpo_goldens as orpo
from test_sft_goldens import assert_same_goldens


def test_committed_orpo_goldens_reproduce(tmp_path):
    orpo.write_goldens(tmp_path / "orpo", tmp_path / "trl-orpo-tokenized.json")
    step = {f"step/{name}" for name in ("expected.json", "batch.json",
                                        *(f"grads_{n}.safetensors" for n in orpo.STEPS))}
    assert_same_goldens(tmp_path / "orpo", orpo.ORPO_GOLDEN, {"losses.json", *step})
    assert (tmp_path / "trl-orpo-tokenized.json").read_bytes() == orpo.TOKENIZED.read_bytes()


def test_every_trl_cpo_loss_type_has_a_golden():
    from dataclasses import fields

    from trl.experimental.cpo import CPOConfig

    choices = next(f for f in fields(CPOConfig) if f.name == "loss_type").metadata["choices"]
    losses = json.loads(orpo.ORPO_GOLDEN.joinpath("losses.json").read_text())
    assert set(choices) - {"alphapo"} == {c["loss_type"] for c in losses.values() if c["method"] == "cpo"}
    assert any(c["method"] == "orpo" for c in losses.values())
