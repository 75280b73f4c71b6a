"""The committed SFT-step goldens (trainer/src/test/resources/golden/sft) are what make_sft_goldens.py produces today.

Generating them also checks what they rest on (make_sft_goldens.py asserts each): packed rows equal their samples run
alone, PEFT's LoRA gradients equal those of the merged weights W + scale * B @ A, every LoRA weight has a gradient,
step 1 is clipped, the Mixtral router's top-2 choice is never a near tie.
"""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import hf_models as hf
import make_sft_goldens as sft

# Inputs (checkpoint, adapter, batch) must be the same bytes; computed numbers may round differently on another CPU.
COMPUTED = {"expected.json", "grads_step0.safetensors", "grads_step0_fp16.safetensors", "weights_after.safetensors",
            "weights_after_no_aux.safetensors"}


def numbers_close(fresh, old, where=""):
    if isinstance(fresh, dict):
        assert fresh.keys() == old.keys(), where
        for key in fresh:
            numbers_close(fresh[key], old[key], f"{where}.{key}")
    elif isinstance(fresh, list):
        assert len(fresh) == len(old), where
        for i, (a, b) in enumerate(zip(fresh, old)):
            numbers_close(a, b, f"{where}[{i}]")
    elif isinstance(fresh, float):
        tolerance = hf.REGENERATED_FP16_SCALAR if "fp16" in where else hf.REGENERATED_SCALAR
        if where.endswith("_rel_diff_to_fp32"):
            # How far float16 lands from float32 on this processor (a note for readers, no test reads it): its
            # kernels differ per CPU, so only the order of magnitude carries over (0.0051 here against 0.0058).
            tolerance = dict(rel=0.5)
        assert fresh == pytest.approx(old, **tolerance), where
    else:
        assert fresh == old, where


def assert_same_goldens(fresh_dir, committed, computed):
    """The same files; those not in `computed` (inputs) byte for byte, the computed ones as close as hf.REGENERATED."""
    files = sorted(p.relative_to(fresh_dir) for p in fresh_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    for rel in files:
        fresh_file, old_file = fresh_dir / rel, committed / rel
        if str(rel) not in computed:
            assert fresh_file.read_bytes() == old_file.read_bytes(), f"{rel} differs"
        elif rel.suffix == ".json":
            numbers_close(json.loads(fresh_file.read_text()), json.loads(old_file.read_text()), str(rel))
        else:
            fresh, old = load_file(fresh_file), load_file(old_file)
            assert fresh.keys() == old.keys(), rel
            for key in fresh:
                tolerance = hf.REGENERATED
                if "fp16" in f"{rel}:{key}":
                    tolerance = dict(atol=hf.REGENERATED_FP16_OF_MAX * float(np.abs(old[key]).max()), rtol=0)
                np.testing.assert_allclose(fresh[key], old[key], **tolerance, err_msg=f"{rel}:{key}")


@pytest.mark.parametrize("name", list(sft.CASES))
def test_committed_sft_golden_reproduces(name, tmp_path):
    sft.write_case(name, tmp_path)
    assert_same_goldens(tmp_path / name, sft.SFT_GOLDEN / name, COMPUTED)


@pytest.mark.parametrize("name", list(sft.CASES))
def test_sft_golden_conventions(name):
    case_dir = sft.SFT_GOLDEN / name
    batch = json.loads((case_dir / "batch.json").read_text())
    expected = json.loads((case_dir / "expected.json").read_text())
    assert len(batch["micro_batches"]) == 2
    total = 0
    for mb in batch["micro_batches"]:
        assert np.array(mb["input_ids"]).shape == (2, sft.ROW_LENGTH)
        for ids, labels, positions, samples in zip(mb["input_ids"], mb["labels"], mb["position_ids"],
                                                   mb["sample_ids"]):
            assert all(label in (sft.IGNORE, token) for token, label in zip(ids, labels))
            starts = [t for t in range(len(ids)) if t == 0 or samples[t] != samples[t - 1]]
            assert all(positions[t] == 0 and labels[t] == sft.IGNORE for t in starts)
            assert all(positions[t] == positions[t - 1] + 1 for t in range(1, len(ids)) if t not in starts)
        assert mb["num_targets"] == sum(label != sft.IGNORE for row in mb["labels"] for label in row)
        total += mb["num_targets"]
    assert batch["num_targets_total"] == total
    adapter = load_file(case_dir / "adapter" / "adapter_model.safetensors")
    weight_files = ["grads_step0.safetensors", "grads_step0_fp16.safetensors"] + [expected[run]["weights_after"]
                                                  for run in ("train", "train_no_aux") if run in expected]
    for f in weight_files:
        tensors = load_file(case_dir / f)
        assert tensors.keys() == adapter.keys()
        assert all(tensors[k].shape == adapter[k].shape and tensors[k].dtype == np.float32 for k in tensors)
    lrs = [step["lr"] for step in expected["train"]["steps"]]
    assert lrs == pytest.approx([0.0, 1e-2, 1e-2 * 2 / 3])
