"""The committed goldens are what make_goldens.py produces today, and the fused layout we write by hand is one that
transformers itself reads back to the same model."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hf_models as hf
import make_autocast_goldens

GOLDEN = hf.repo_root() / "model" / "src" / "test" / "resources" / "golden"


@pytest.mark.parametrize("name", list(hf.SPECS))
def test_committed_golden_reproduces(name, tmp_path):
    hf.build_checkpoint(name, tmp_path)
    ref = hf.reference(tmp_path, hf.PROMPT_20)
    committed = load_file(GOLDEN / name / "expected.safetensors")
    assert committed.keys() == ref.tensors.keys()
    for key, value in ref.tensors.items():
        torch.testing.assert_close(value, committed[key], **hf.REGENERATED)
    assert json.loads((GOLDEN / name / "greedy.json").read_text())["new_ids"] == ref.new_ids
    assert json.loads((GOLDEN / name / "prompt.json").read_text())["prompt_ids"] == hf.PROMPT_20
    assert hf.read_tensors(tmp_path).keys() == hf.read_tensors(GOLDEN / name).keys()


def test_hf_reads_fused_and_hub_layouts_alike(tmp_path):
    spec = hf.SPECS["mixtral-fused"]
    model = hf.build_model(spec)
    hf.save_checkpoint(model, spec, tmp_path / "fused")
    model.save_pretrained(tmp_path / "hub")
    assert hf.moe_layout_of(hf.read_tensors(tmp_path / "fused")) == "fused"
    assert hf.moe_layout_of(hf.read_tensors(tmp_path / "hub")) == "hub"
    fused = hf.prompt_forward(hf.load_reference(tmp_path / "fused"), hf.PROMPT_20)
    hub = hf.prompt_forward(hf.load_reference(tmp_path / "hub"), hf.PROMPT_20)
    for key in hub:
        torch.testing.assert_close(fused[key], hub[key], atol=0, rtol=0)


def test_layout_conversion_round_trips():
    spec = hf.SPECS["mixtral-sharded"]
    hub = hf.to_hub(hf.build_model(spec).state_dict())
    back = hf.to_hub(hf.to_fused(hub))
    assert back.keys() == hub.keys()
    assert all(torch.equal(back[k], hub[k]) for k in hub)


def test_batch_golden_points_at_a_checkpoint():
    inputs = json.loads((GOLDEN / "mistral-batch" / "inputs.json").read_text())
    checkpoint = (GOLDEN / "mistral-batch" / inputs["checkpoint"]).resolve()
    assert (checkpoint / "config.json").exists()
    logits = load_file(GOLDEN / "mistral-batch" / "expected.safetensors")["logits"]
    assert list(logits.shape) == [2, 16, 512]


def test_committed_autocast_golden_reproduces():
    logits, _ = make_autocast_goldens.autocast_logits(make_autocast_goldens.GOLDEN)
    committed = load_file(make_autocast_goldens.GOLDEN / "autocast_fp16.safetensors")["logits"]
    assert (logits - committed).abs().max() <= hf.REGENERATED_FP16_OF_MAX * committed.abs().max()
