"""bin/mixtune generate against transformers, on checkpoints freshly built here (not the committed goldens).

Contract: `mixtune generate --model DIR --prompt-ids 1,5,... --max-new-tokens N --greedy --output-ids
--dump-logits OUT.safetensors` prints the new token ids comma-separated as the last line of stdout and writes one
tensor `logits` [prompt_len, vocab] f32 (the prompt's forward pass) to OUT.
"""

import os
import subprocess
from pathlib import Path

import pytest
from safetensors.numpy import load_file

import hf_models as hf

MIXTUNE = hf.repo_root() / "bin" / "mixtune"
ATOL = 1e-4


def run_mixtune(model_dir: Path, prompt_ids: list[int], dump: Path) -> list[int]:
    if not os.access(MIXTUNE, os.X_OK):
        pytest.fail(f"{MIXTUNE} does not exist or is not executable")
    cmd = [str(MIXTUNE), "generate", "--model", str(model_dir),
           "--prompt-ids", ",".join(map(str, prompt_ids)), "--max-new-tokens", str(hf.MAX_NEW_TOKENS),
           "--greedy", "--output-ids", "--dump-logits", str(dump)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"mixtune printed nothing on stdout\n{proc.stderr}"
    return [int(tok) for tok in lines[-1].split(",")]


@pytest.mark.parametrize("name", ["mistral-fp32", "mistral-bf16", "mixtral-sharded", "mixtral-fused", "mistral-nemo-tied"])
def test_generate_matches_transformers(name, tmp_path):
    spec = hf.build_checkpoint(name, tmp_path / "model")
    if spec.sliding_window is not None:
        assert spec.sliding_window < len(hf.PROMPT_20), "the window must bite inside the prompt"
    ref = hf.reference(tmp_path / "model", hf.PROMPT_20)

    new_ids = run_mixtune(tmp_path / "model", hf.PROMPT_20, tmp_path / "logits.safetensors")

    logits = load_file(tmp_path / "logits.safetensors")["logits"]
    expected = ref.tensors["logits"].numpy()
    assert logits.dtype == expected.dtype and logits.shape == expected.shape
    diff = abs(logits - expected).max()
    assert diff <= ATOL, f"max |logit diff| {diff:.3g} > {ATOL}"
    assert new_ids == ref.new_ids


def test_generate_stops_at_any_eos_id_of_generation_config_as_transformers(tmp_path):
    """A generation_config.json that lists an end-of-turn id beside EOS (as Llama 3 and Mistral v0.3 instruct models do)
    ends generation at either, in transformers' generate and in mixtune's."""
    import json

    import torch
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "model"
    hf.build_checkpoint("mistral-fp32", model_dir)
    free = hf.reference(model_dir, hf.PROMPT_20).new_ids
    end = next(k for k in range(2, len(free)) if free[k] not in free[:k] and free[k] != 2)
    config = json.loads((model_dir / "generation_config.json").read_text())
    config["eos_token_id"] = [2, free[end]]
    (model_dir / "generation_config.json").write_text(json.dumps(config))

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    expected = model.generate(torch.tensor([hf.PROMPT_20]), max_new_tokens=hf.MAX_NEW_TOKENS)[0, len(hf.PROMPT_20):]
    assert expected.tolist() == free[:end + 1]
    assert run_mixtune(model_dir, hf.PROMPT_20, tmp_path / "logits.safetensors") == free[:end + 1]


@pytest.mark.parametrize("penalty", [0.5, 1.8])
def test_greedy_repetition_penalty_matches_transformers(penalty, tmp_path):
    """--repetition-penalty on greedy decoding: transformers' RepetitionPenaltyLogitsProcessor over the prompt's ids and
    the answer's (0.5 rewards repeating, 1.8 punishes it)."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "model"
    hf.build_checkpoint("mistral-fp32", model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    expected = model.generate(torch.tensor([hf.PROMPT_20]), max_new_tokens=hf.MAX_NEW_TOKENS, do_sample=False,
                              repetition_penalty=penalty)[0, len(hf.PROMPT_20):].tolist()
    unpenalized = model.generate(torch.tensor([hf.PROMPT_20]), max_new_tokens=hf.MAX_NEW_TOKENS,
                                 do_sample=False)[0, len(hf.PROMPT_20):].tolist()
    assert expected != unpenalized, "the penalty must change the answer to test anything"
    cmd = [str(MIXTUNE), "generate", "--model", str(model_dir), "--prompt-ids", ",".join(map(str, hf.PROMPT_20)),
           "--max-new-tokens", str(hf.MAX_NEW_TOKENS), "--greedy", "--repetition-penalty", str(penalty),
           "--output-ids"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert [int(t) for t in proc.stdout.strip().splitlines()[-1].split(",")] == expected
