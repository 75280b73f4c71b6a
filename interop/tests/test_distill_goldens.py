"""The committed distillation goldens (trainer/src/test/resources/golden/distill) are what make_distill_goldens.py
produces today."""

import make_distill_goldens as distill
from test_sft_goldens import assert_same_goldens


def test_committed_distill_goldens_reproduce(tmp_path):
    distill.write_goldens(tmp_path / "distill")
    step = {f"step/{name}" for name in ("expected.json", *(f"grads_{n}.safetensors" for n in distill.STEPS))}
    assert_same_goldens(tmp_path / "distill", distill.DISTILL_GOLDEN, {"losses.json", *step})
