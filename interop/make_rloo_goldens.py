"""RLOO goldens (see interop/GOLDENS.md, "RLOO"), all from TRL 1.13's own RLOOTrainer code:

- trainer/src/test/resources/golden/rloo/advantages.json: RLOOTrainer._generate_and_score_completions on fixed
  prompts and completions (its tokenizer and generation replaced by the fixed ids), reward functions that return
  fixed scores (None among them) and fixed per-token log-probs of the sampling policy and the reference (its
  _get_per_token_logps_and_entropies replaced by one that returns them): the advantages, completion mask and TRL's
  metrics per beta, reward_weights, normalize_advantages, reward_clip_range and mask_truncated_completions.
- trainer/src/test/resources/golden/rloo/losses.json: RLOOTrainer._compute_loss on fixed per-token log-probs (its
  forward replaced by one that returns them), old sequence log-probs and advantages: the loss, d loss / d policy
  log-probs and the logged entropy and clip_ratio/*, per epsilon and epsilon_high, in float64.
- trainer/src/test/resources/golden/rloo/step/: one RLOO step of RLOOTrainer on the tiny Mixtral of the SFT golden
  (its checkpoint and random PEFT adapter), GRPO's step batch (2 prompts x 2 completions, one reward None, two cut at
  max_completion_length): _generate_and_score_completions on the fixed completions (beta 0.05, the reference the
  model with its adapter off, temperature 0.7), then _compute_loss and backward: the old and reference per-token
  log-probs, advantages, loss, metrics and every LoRA gradient.

Run: interop/.venv/bin/python interop/make_rloo_goldens.py
Deterministic: fixed seeds, one torch thread.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import datasets
import torch
from datasets import Dataset
from safetensors.torch import save_file

import hf_models as hf
import make_goldens as mg
import make_grpo_goldens as grpo
import make_sft_goldens as sft

RLOO_GOLDEN = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "rloo"


def make_trainer(model, work: Path, reward_funcs, **config):
    from trl import RLOOConfig, RLOOTrainer

    if "ref" in getattr(model, "peft_config", {}):  # an earlier trainer's copy of the adapter (beta > 0)
        model.delete_adapter("ref")
        model.set_adapter("default")
    args = RLOOConfig(output_dir=str(work), report_to=[], use_cpu=True, dataloader_num_workers=0, **config)
    dataset = Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RLOOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                           processing_class=grpo.tokenizer())


# ---- (a) rewards and advantages on fixed completions -----------------------------------------------------------------

# GRPO's 3 prompts x 3 completions (two cut at max_completion_length 5), and scores with Nones: the third group's
# "accuracy" has one None, "single" leaves the second group a single scorable completion (its baseline 0 / 0).
FIXED = dict(grpo.FIXED, single=[1.0, 0.5, -1.0, 2.0, None, None, 0.0, 1.5, 3.0])
ADVANTAGE_CASES = {  # name -> reward functions, reward_weights, beta, normalize, clip range, mask_truncated
    "one_func": (["accuracy"], None, 0.0, False, None, False),
    "beta": (["accuracy"], None, 0.05, False, None, False),
    "two_funcs_weighted_beta": (["accuracy", "length"], [1.0, 0.5], 0.1, False, None, False),
    "normalized": (["accuracy", "length"], [2.0, -1.0], 0.05, True, None, False),
    "clipped": (["accuracy", "length"], None, 0.05, False, [-0.1, 1.2], False),
    "single_scorable_masked": (["single"], None, 0.05, False, None, True),
    "single_scorable_normalized": (["single"], None, 0.0, True, None, False),
}
LOGPS_SEED = 7401


def fixed_logps() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(LOGPS_SEED)
    width = max(len(c) for c in grpo.COMPLETIONS)
    old = -torch.rand(len(grpo.COMPLETIONS), width, generator=gen) * 3 - 0.05
    ref = old + (torch.rand(len(grpo.COMPLETIONS), width, generator=gen) - 0.5) * 1.2
    return old, ref


def fixed_reward(name: str):
    def reward(prompts, completions, completion_ids, **kwargs):
        return list(FIXED[name])

    reward.__name__ = name
    return reward


def advantage_cases(model, work: Path) -> dict:
    old, ref = fixed_logps()
    out = {}
    for name, (funcs, weights, beta, normalize, clip, mask_truncated) in ADVANTAGE_CASES.items():
        trainer = make_trainer(model, work, [fixed_reward(f) for f in funcs], num_generations=3,
                               per_device_train_batch_size=9, max_completion_length=5, reward_weights=weights,
                               beta=beta, normalize_advantages=normalize, reward_clip_range=clip,
                               mask_truncated_completions=mask_truncated)
        prompts = [p for p in grpo.PROMPTS for _ in range(3)]
        trainer._tokenize_prompts = lambda p: ([list(x) for x in prompts], None, {})
        trainer._generate_single_turn = lambda *a, **k: [list(c) for c in grpo.COMPLETIONS]
        calls = iter([old, ref])
        trainer._get_per_token_logps_and_entropies = lambda *a, **k: (next(calls).clone(), None, None)
        trainer.model.train()
        batch = trainer._generate_and_score_completions([{"prompt": f"prompt {i // 3}"} for i in range(9)])
        logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
        out[name] = {"reward_funcs": funcs, "reward_weights": weights, "beta": beta, "normalize_advantages": normalize,
                     "reward_clip_range": clip, "mask_truncated_completions": mask_truncated,
                     "rewards": [FIXED[f] for f in funcs], "advantages": batch["advantages"].tolist(),
                     "completion_mask": batch["completion_mask"].tolist(), "metrics": logged}
    return {"num_generations": 3, "max_completion_length": 5, "eos_id": grpo.E, "prompts": grpo.PROMPTS,
            "completions": grpo.COMPLETIONS, "old_per_token_logps": old.tolist(), "ref_per_token_logps": ref.tolist(),
            "cases": out}


# ---- (b) the loss on fixed per-token log-probs -----------------------------------------------------------------------

LOSS_CASES = {  # name -> epsilon, epsilon_high, whether the old log-probs are the policy's own (num_iterations 1)
    "on_policy": (0.2, None, True),
    "clipped": (0.2, None, False),
    "clipped_epsilon_high": (0.1, 0.3, False),
}


def loss_cases(model, work: Path) -> dict:
    trainer = make_trainer(model, work, [lambda **k: [0.0] * len(k["prompts"])], num_generations=2,
                           per_device_train_batch_size=2, beta=0.0)
    t = grpo.fixed_tensors()
    # sequence-level log-ratios within and outside the clip range: the old sums shifted by -0.4 .. 0.4
    shifts = torch.tensor([-0.35, 0.3, -0.05, 0.4], dtype=torch.float64)
    out = {"tensors": {k: t[k].tolist() for k in ("policy", "entropies", "mask", "advantages")},
           "shifts": shifts.tolist(), "cases": {}}
    for name, (epsilon, epsilon_high, on_policy) in LOSS_CASES.items():
        policy = t["policy"].clone().requires_grad_(True)
        trainer._get_per_token_logps_and_entropies = lambda *a, **k: (policy, t["entropies"], None)
        trainer.epsilon_low = epsilon
        trainer.epsilon_high = epsilon_high if epsilon_high is not None else epsilon
        trainer.aux_loss_enabled = False
        trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        old_logps = (t["policy"] * t["mask"]).sum(1)
        if not on_policy:
            old_logps = old_logps + shifts
        inputs = {"prompt_ids": torch.zeros(grpo.ROWS, 2, dtype=torch.long),
                  "prompt_mask": torch.ones(grpo.ROWS, 2, dtype=torch.long),
                  "completion_ids": torch.zeros(grpo.ROWS, grpo.WIDTH, dtype=torch.long),
                  "completion_mask": t["mask"], "advantages": t["advantages"], "old_logps": old_logps}
        trainer.model.train()
        loss = trainer._compute_loss(trainer.model, inputs)
        loss.backward()
        logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        out["cases"][name] = {"epsilon": epsilon, "epsilon_high": epsilon_high, "on_policy": on_policy,
                              "old_logps": old_logps.tolist(), "loss": float(loss.detach()),
                              "grad": policy.grad.tolist(), "metrics": logged}
    return out


# ---- (c) one step of TRL's RLOOTrainer on the tiny Mixtral ------------------------------------------------------------

STEP = {"beta": 0.05, "temperature": 0.7}


def trl_step(case_dir: Path, prompts: list, completions: list, work: Path) -> tuple[dict, dict]:
    trainable = sft.Trainable(sft.CASES[grpo.SFT_CASE], case_dir)
    trainer = make_trainer(trainable.model, work, [grpo.step_reward], num_generations=2,
                           per_device_train_batch_size=4, max_completion_length=6, beta=STEP["beta"],
                           temperature=STEP["temperature"], router_aux_loss_coef=trainable.config.router_aux_loss_coef)
    # the reference is the base (adapter off), as mixtune's for a fresh adapter: drop TRL's copy of the adapter
    trainable.model.delete_adapter("ref")
    trainable.model.set_adapter("default")
    trainable.model.train()
    group = [p for p in prompts for _ in range(2)]
    trainer._tokenize_prompts = lambda p: ([list(x) for x in group], None, {})
    trainer._generate_single_turn = lambda *a, **k: [list(c) for c in completions]
    forward = trainer._get_per_token_logps_and_entropies
    no_grad_passes = []

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        if not torch.is_grad_enabled():
            no_grad_passes.append(out[0].detach().clone())
        return out

    trainer._get_per_token_logps_and_entropies = recording
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([{"prompt": "p"} for _ in range(4)])
    old, ref = no_grad_passes
    trainable.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainable.model, batch)
    loss.backward()
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
    grads = trainable.adapter_tensors(of=lambda w: w.grad)
    zero = [k for k, g in grads.items() if not torch.any(g)]
    assert not zero, f"LoRA weights without gradient: {zero}"
    record = dict(STEP, loss=float(loss.detach()), aux_coef=trainable.config.router_aux_loss_coef,
                  advantages=batch["advantages"].tolist(), metrics=logged, old_per_token_logps=old.tolist(),
                  ref_per_token_logps=ref.tolist(), grads="grads.safetensors")
    return record, grads


def write_goldens(out: Path = RLOO_GOLDEN) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory() as work:
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            trainable = sft.Trainable(sft.CASES[grpo.SFT_CASE], sft.SFT_GOLDEN / grpo.SFT_CASE)
            mg.write_json(out / "advantages.json", advantage_cases(trainable.model, Path(work)))
            mg.write_json(out / "losses.json", loss_cases(trainable.model, Path(work)))
            (out / "step").mkdir()
            prompts, completions = grpo.make_step_ids(hf.TINY["vocab_size"])
            record, grads = trl_step(sft.SFT_GOLDEN / grpo.SFT_CASE, prompts, completions, Path(work))
            save_file(grads, out / "step" / record["grads"], metadata={"format": "pt"})
            print(f"rloo step: loss {record['loss']:.6f}")
            mg.write_json(out / "step" / "batch.json", grpo.step_batch(prompts, completions))
            mg.write_json(out / "step" / "expected.json", record)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    if argv:
        raise SystemExit("make_rloo_goldens.py takes no arguments")
    write_goldens()


if __name__ == "__main__":
    main(sys.argv[1:])
