"""The committed GRPO goldens (trainer/src/test/resources/golden/grpo) are what make_grpo_goldens.py produces today,
and they cover every loss type mixtune offers of TRL 1.13's GRPOTrainer."""

import json

import make_grpo_goldens as grpo
from test_sft_goldens import assert_same_goldens


def test_committed_grpo_goldens_reproduce(tmp_path):
    grpo.write_goldens(tmp_path / "grpo")
    step = {f"step/{name}" for name in ("expected.json", *(f"grads_{n}.safetensors" for n in grpo.STEPS))}
    assert_same_goldens(tmp_path / "grpo", grpo.GRPO_GOLDEN, {"losses.json", "gspo_losses.json", "advantages.json", *step})


def test_every_offered_loss_type_has_a_golden():
    # trainer/.../recipe/GrpoConfig.LOSS_TYPES: TRL's loss types but luspo and vespo
    offered = {"grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo"}
    losses = json.loads(grpo.GRPO_GOLDEN.joinpath("losses.json").read_text())
    assert offered == {c["loss_type"] for c in losses["cases"].values()}


def test_every_offered_loss_type_has_a_sequence_level_golden():
    losses = json.loads(grpo.GRPO_GOLDEN.joinpath("gspo_losses.json").read_text())
    assert {"grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo"} == {c["loss_type"] for c in losses["cases"].values()}
    assert all(c["importance_sampling_level"] == "sequence" for c in losses["cases"].values())
