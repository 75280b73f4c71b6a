"""The committed RLOO goldens (trainer/src/test/resources/golden/rloo) are what make_rloo_goldens.py produces today."""

import make_rloo_goldens as rloo
from test_sft_goldens import assert_same_goldens


def test_committed_rloo_goldens_reproduce(tmp_path):
    rloo.write_goldens(tmp_path / "rloo")
    computed = {"advantages.json", "losses.json", "step/expected.json", "step/grads.safetensors"}
    assert_same_goldens(tmp_path / "rloo", rloo.RLOO_GOLDEN, computed)
