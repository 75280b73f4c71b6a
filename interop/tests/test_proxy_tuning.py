"""Proxy-tuning (Liu et al. 2024) in bin/mixtune generate against transformers, on checkpoints built here.

transformers runs the three models on their own; the proxy-tuned logits are large + alpha (tuned - base) of theirs.
`mixtune generate --model LARGE --proxy-base SMALL (--proxy-tuned DIR | --proxy-adapter DIR) --proxy-alpha A
--dump-logits OUT` must write those logits for the prompt within 1e-4 and decode the same greedy tokens (the reference
recomputes the three models on the whole sequence at every step, no cache).
"""

import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.numpy import load_file

import hf_models as hf

MIXTUNE = hf.repo_root() / "bin" / "mixtune"
ATOL = 1e-4

# The large model: the Mistral with a window of 8 (chunked prefill, a wrapped rolling buffer); the small pair: a
# narrower MLP and no window, so each of the three keeps a different kind of cache.
LARGE = hf.SPECS["mistral-fp32"]
SMALL_BASE = hf.CheckpointSpec(arch="mistral", seed=7001, sliding_window=None, intermediate_size=64)
SMALL_TUNED = hf.CheckpointSpec(arch="mistral", seed=7002, sliding_window=None, intermediate_size=64)


def combine(large, base, tuned, alpha):
    return (large.double() + alpha * (tuned.double() - base.double())).float()


@torch.no_grad()
def proxy_reference(large, base, tuned, alpha, prompt, max_new_tokens):
    """The prompt's combined logits [T, V] and greedy decoding that reruns the three models on the whole sequence."""
    def logits(model, seq):
        return model(input_ids=torch.tensor([seq]), use_cache=False).logits[0].float()

    prompt_logits = combine(logits(large, prompt), logits(base, prompt), logits(tuned, prompt), alpha)
    seq, new, min_gap = list(prompt), [], float("inf")
    for _ in range(max_new_tokens):
        last = combine(logits(large, seq)[-1], logits(base, seq)[-1], logits(tuned, seq)[-1], alpha)
        top = torch.topk(last, 2).values
        min_gap = min(min_gap, float(top[0] - top[1]))
        nxt = int(torch.argmax(last))
        new.append(nxt)
        seq.append(nxt)
        if nxt == hf.EOS_ID:
            break
    return prompt_logits, new, min_gap


def run_mixtune(args: list, dump: Path) -> list[int]:
    cmd = [str(MIXTUNE), "generate", *map(str, args), "--prompt-ids", ",".join(map(str, hf.PROMPT_20)),
           "--max-new-tokens", str(hf.MAX_NEW_TOKENS), "--greedy", "--output-ids", "--dump-logits", str(dump)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return [int(tok) for tok in proc.stdout.strip().splitlines()[-1].split(",")]


def build(spec, out_dir: Path) -> Path:
    hf.save_checkpoint(hf.build_model(spec), spec, out_dir)
    return out_dir


@pytest.mark.parametrize("tuned_as,alpha", [("checkpoint", 1.0), ("checkpoint", 0.6), ("adapter", 1.5)])
def test_proxy_tuned_generate_matches_transformers(tmp_path, tuned_as, alpha):
    large_dir = build(LARGE, tmp_path / "large")
    base_dir = build(SMALL_BASE, tmp_path / "small-base")
    base = hf.load_reference(base_dir)
    if tuned_as == "checkpoint":
        tuned_dir = build(SMALL_TUNED, tmp_path / "small-tuned")
        tuned = hf.load_reference(tuned_dir)
        proxy_args = ["--proxy-tuned", tuned_dir]
    else:
        # PEFT's own random LoRA on every linear (init_lora_weights=False draws B too, so it changes the logits).
        torch.manual_seed(2026)
        config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"])
        with warnings.catch_warnings():
            hf.quiet_fused_pattern_notice()
            tuned = get_peft_model(hf.load_reference(base_dir), config).eval()
        tuned.save_pretrained(tmp_path / "adapter")
        proxy_args = ["--proxy-adapter", tmp_path / "adapter"]
    large = hf.load_reference(large_dir)
    expected_logits, expected_ids, min_gap = proxy_reference(large, base, tuned, alpha, hf.PROMPT_20,
                                                             hf.MAX_NEW_TOKENS)
    assert min_gap > 10 * ATOL, f"a near tie ({min_gap:.3g}) would make the greedy comparison flaky"

    new_ids = run_mixtune(["--model", large_dir, "--proxy-base", base_dir, *proxy_args, "--proxy-alpha", alpha],
                          tmp_path / "logits.safetensors")

    logits = load_file(tmp_path / "logits.safetensors")["logits"]
    assert logits.shape == tuple(expected_logits.shape)
    diff = abs(logits - expected_logits.numpy()).max()
    print(f"proxy-tuned {tuned_as} alpha {alpha}: max |logit diff| {diff:.3g}, greedy {new_ids}")
    assert diff <= ATOL, f"max |proxy-tuned logit diff| {diff:.3g} > {ATOL}"
    assert new_ids == expected_ids
    # The steering is visible: the large model alone decodes otherwise, or its logits differ by far more than 1e-4.
    alone = combine(hf.prompt_forward(large, hf.PROMPT_20)["logits"], expected_logits, expected_logits, 0.0)
    assert abs(alone.numpy() - logits).max() > 0.1
