"""`mixtune merge-moe` (mergekit-moe's YAML) against transformers and mergekit-moe's formulas.

- The committed goldens regenerate byte for byte (make_moe_goldens.py).
- A mixture whose experts are all the base model loads in transformers as MixtralForCausalLM, with no missing or
  unexpected keys, and its logits equal the dense Mistral's for every gate mode: top-k routing weights are renormalised
  to sum to 1, so the router cannot change the output.
- The hidden gate mode's router rows, run from the command line, equal the golden's (transformers' hidden states).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hf_models as hf
import make_moe_goldens as goldens
from test_merge_goldens import assert_same_files
from test_peft_interop import mixtune

GOLDEN = goldens.GOLDEN
IDS = [1, 3, 6, 21, 5, 14, 9, 8, 10, 12, 13, 4, 7, 26, 15]


def test_committed_goldens_reproduce(tmp_path):
    goldens.main(tmp_path / "moe")
    assert_same_files(tmp_path / "moe", GOLDEN)


def write_config(path: Path, gate_mode: str, experts: list[dict], **extra) -> Path:
    lines = [f"base_model: {GOLDEN / 'base'}", f"gate_mode: {gate_mode}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines.append("experts:")
    for e in experts:
        lines.append(f"  - source_model: {e['source_model']}")
        for side in ("positive_prompts", "negative_prompts"):
            if e.get(side):
                lines.append(f"    {side}: {json.dumps(e[side])}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("gate_mode", ["hidden", "random"])
def test_copies_of_the_base_give_the_dense_models_logits_in_transformers(gate_mode, tmp_path):
    experts = [{"source_model": GOLDEN / "base", "positive_prompts": [p]}
               for p in ["doctor heals", "write python", "brave knight"]]
    config = write_config(tmp_path / "moe.yml", gate_mode, experts, experts_per_token=2)
    out = tmp_path / "out"
    proc = mixtune("merge-moe", config, out, "--i-understand-this-is-not-useful-without-training", "--device", "cpu")
    assert "3 experts (2 per token)" in proc.stdout
    assert "not a power of two" in proc.stdout
    mixture = hf.load_reference(out)  # raises on missing, unexpected or mismatched keys
    assert type(mixture).__name__ == "MixtralForCausalLM"
    assert mixture.config.num_local_experts == 3 and mixture.config.num_experts_per_tok == 2
    dense = hf.load_reference(GOLDEN / "base")
    got = hf.prompt_forward(mixture, IDS)
    want = hf.prompt_forward(dense, IDS)
    torch.testing.assert_close(got["logits"], want["logits"], atol=1e-5, rtol=0)
    # The router does route: its choices differ between tokens, so the equality is not one expert's doing.
    chosen = got["router_logits.1"].topk(2, dim=-1).indices.sort(dim=-1).values
    assert len({tuple(row.tolist()) for row in chosen}) > 1


def test_hidden_router_rows_from_the_command_line_equal_the_golden(tmp_path):
    case = json.loads((GOLDEN / "cases.json").read_text())[0]
    experts = [dict(e, source_model=GOLDEN / e["source_model"]) for e in case["experts"]]
    config = write_config(tmp_path / "moe.yml", "hidden", experts, dtype="float32")
    mixtune("merge-moe", config, tmp_path / "out", "--device", "cpu")
    expected = load_file(GOLDEN / "expected.safetensors")
    written = load_file(tmp_path / "out" / "model.safetensors")
    for layer in range(2):
        torch.testing.assert_close(written[f"model.layers.{layer}.block_sparse_moe.gate.weight"],
                                   expected[f"hidden.gate.{layer}"], atol=2e-6, rtol=0)
    tokenizer_config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == goldens.CHAT_TEMPLATE
    assert (tmp_path / "out" / "mergekit_moe_config.yml").read_text() == config.read_text()


def test_refusals_exit_2_and_write_nothing(tmp_path):
    config = write_config(tmp_path / "moe.yml", "random", [{"source_model": GOLDEN / "expert1"},
                                                            {"source_model": GOLDEN / "expert2"}])
    proc = mixtune("merge-moe", config, tmp_path / "out", "--load-in-4bit", expect_rc=2)
    assert "--load-in-4bit is mergekit-moe's and not taken" in proc.stderr
    config.write_text(config.read_text() + "shared_experts:\n  - source_model: x\n")
    proc = mixtune("merge-moe", config, tmp_path / "out", expect_rc=2)
    assert "shared_experts" in proc.stderr
    assert not (tmp_path / "out").exists()
