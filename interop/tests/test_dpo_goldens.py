"""The committed DPO goldens (trainer/src/test/resources/golden/dpo) are what make_dpo_goldens.py produces today.

Generating them also checks what they rest on (make_dpo_goldens.py asserts each): TRL's DPOTrainer loss on the step
batch equals the formulas of losses.json applied to the batch's log-probs (plus the SFT and router terms), TRL's
logged metrics equal the same formulas, every LoRA weight has a gradient.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

import make_dpo_goldens as dpo
from test_sft_goldens import assert_same_goldens


def test_committed_dpo_golden_reproduces(tmp_path):
    dpo.write_goldens(tmp_path / "dpo")
    step = {f"step/{name}" for name in ("expected.json", "ld_alpha.json", "use_weighting.json", "eval.json",
                                         *(f"grads_{t}.safetensors"
                                           for t in (*dpo.LOSS_TYPES, *dpo.LD_ALPHA_STEPS, *dpo.WPO_STEPS)))}
    assert_same_goldens(tmp_path / "dpo", dpo.DPO_GOLDEN, {"losses.json", "loss_types.json", "f_divergence.json", *step})


def test_every_trl_loss_type_has_a_golden():
    """The loss types in TRL's _compute_loss source are those of losses.json, loss_types.json and sft (the step
    golden's sigmoid_sft), so a TRL upgrade that adds one fails here."""
    import inspect
    import re

    from trl import DPOTrainer

    trl_types = set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(DPOTrainer._compute_loss)))
    covered = {v["loss_type"] for v in dpo.VARIANTS.values()} | {"sft"}
    covered |= {t for v in dpo.TRL_LOSS_TYPES.values() for t in v["loss_type"]}
    assert trl_types == covered, trl_types ^ covered


def test_every_trl_f_divergence_has_a_golden():
    """The f_divergence_type values of TRL's _compute_loss source, other than reverse_kl (every other golden's), are
    those of f_divergence.json, and each loss type TRL lets them regularise appears under one of them."""
    import inspect
    import re

    from trl import DPOTrainer

    source = inspect.getsource(DPOTrainer._compute_loss)
    trl_types = set(re.findall(r'f_divergence_type == "(\w+)"', source)) - {"reverse_kl"}
    assert trl_types == {v["f_divergence_type"] for v in dpo.F_DIVERGENCE.values()}
    init = inspect.getsource(DPOTrainer.__init__)
    allowed = set(re.findall(r'"(\w+)"', re.search(r"f_divergence_loss_types = \{([^}]*)\}", init).group(1)))
    covered = {t for v in dpo.F_DIVERGENCE.values() for t in v["loss_type"]}
    assert allowed - {"sft"} <= covered and covered <= allowed, (allowed, covered)


def test_robust_is_unbiased_under_flipped_labels_and_sigmoid_ignores_label_smoothing():
    """Robust DPO at eps = 0 is the sigmoid loss; with labels flipped at rate eps its expectation is the sigmoid loss of
    the clean label. TRL 1.13's sigmoid takes no label smoothing."""
    d = torch.tensor([-3.0, 0.0, 2.5], dtype=torch.float64)
    ones = torch.ones(3, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    plain = dpo.per_pair_loss("sigmoid", 0.1, 0.0, d, zero, zero, zero, ones, ones)
    assert torch.allclose(plain, -F.logsigmoid(0.1 * d))
    assert torch.allclose(dpo.per_pair_loss("sigmoid", 0.1, 0.3, d, zero, zero, zero, ones, ones), plain)
    assert torch.allclose(dpo.per_pair_loss("robust", 0.1, 0.0, d, zero, zero, zero, ones, ones), plain)
    eps = 0.2
    robust = dpo.per_pair_loss("robust", 0.1, eps, d, zero, zero, zero, ones, ones)
    flipped = dpo.per_pair_loss("robust", 0.1, eps, -d, zero, zero, zero, ones, ones)
    assert torch.allclose((1 - eps) * robust + eps * flipped, plain)


def test_robust_formula_is_trls():
    """The formula here is the one in TRL's DPOTrainer._compute_loss source."""
    import inspect

    from trl import DPOTrainer

    source = inspect.getsource(DPOTrainer._compute_loss)
    assert 'loss_type == "robust"' in source
    assert "(clean_loss_term - flipped_loss_term) / (1 - 2 * self.label_smoothing)" in source
    sigmoid = source[source.index('if loss_type == "sigmoid"'):source.index('elif loss_type == "hinge"')]
    assert "label_smoothing" not in sigmoid


def test_dpo_golden_conventions():
    batch = json.loads((dpo.DPO_GOLDEN / "step" / "batch.json").read_text())
    expected = json.loads((dpo.DPO_GOLDEN / "step" / "expected.json").read_text())
    pairs, collated = batch["pairs"], batch["collated"]
    n = len(pairs)
    for i, pair in enumerate(pairs):
        for side, key in enumerate(("chosen_ids", "rejected_ids")):
            row = collated["input_ids"][side * n + i]
            sequence = pair["prompt_ids"] + pair[key]
            assert row[:len(sequence)] == sequence and set(row[len(sequence):]) <= {batch["pad_id"]}
            completion = collated["completion_mask"][side * n + i]
            assert sum(completion) == len(pair[key]) and completion[len(pair["prompt_ids"])] == 1
            assert pair[key][-1] == dpo.hf.EOS_ID
    adapter = load_file(dpo.sft.SFT_GOLDEN / dpo.SFT_CASE / "adapter" / "adapter_model.safetensors")
    for name, record in expected.items():
        grads = load_file(dpo.DPO_GOLDEN / "step" / record["grads"])
        assert grads.keys() == adapter.keys(), name
        assert 0 < record["metrics"]["rewards/accuracies"] < 1, "the batch should hold a pair the model gets wrong"
    assert expected["sigmoid_sft"]["loss"] == pytest.approx(
        expected["sigmoid"]["loss"] + batch["sft_weight"] * expected["sigmoid"]["nll"], rel=1e-6)
