"""GRPO goldens (see interop/GOLDENS.md, "GRPO"), all from TRL 1.13's own GRPOTrainer code:

- trainer/src/test/resources/golden/grpo/losses.json: fixed per-token log-probs (policy, old policy, reference),
  entropies, a completion mask and advantages through GRPOTrainer._compute_loss itself, its forward replaced by one
  that returns the fixed log-probs: per loss type (grpo, bnpo, dr_grpo, dapo, cispo, sapo), epsilon/epsilon_high,
  delta, beta (TRL's k3 KL to the reference) and gradient accumulation, the loss, d loss / d policy log-probs and
  TRL's logged kl, entropy and clip_ratio/*, in float64.
- trainer/src/test/resources/golden/grpo/gspo_losses.json: the same with importance_sampling_level "sequence" (GSPO:
  one ratio per completion), GSPO's epsilon 3e-4 / 4e-4 so the clipping binds, a completion masked whole (as
  mask_truncated_completions does) and one case on-policy (no old log-probs: TRL's per_token_logps.detach()).
- trainer/src/test/resources/golden/grpo/advantages.json: GRPOTrainer._generate_and_score_completions on fixed
  prompts and completions (its tokenizer and generation replaced by the fixed ids) and reward functions that return
  fixed scores (None among them): the advantages, completion mask and TRL's metrics per scale_rewards, reward_weights,
  multi_objective_aggregation and mask_truncated_completions.
- trainer/src/test/resources/golden/grpo/rewards.json: trl.rewards' think_format_reward, get_soft_overlong_punishment and
  get_repetition_penalty_reward on fixed texts and ids, with their __name__s.
- trainer/src/test/resources/golden/grpo/step/: one GRPO step of GRPOTrainer on the tiny Mixtral of the SFT golden
  (its checkpoint and random PEFT adapter): _generate_and_score_completions on fixed completions, then _compute_loss
  and backward, beta > 0 (the reference the model with its adapter off), temperature 0.7: loss, metrics, every LoRA
  gradient.

Run: interop/.venv/bin/python interop/make_grpo_goldens.py
Deterministic: fixed seeds, float32 (float64 for losses.json), one torch thread.
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
import make_sft_goldens as sft

GRPO_GOLDEN = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "grpo"
SFT_CASE = "mixtral"
PAD = hf.EOS_ID


def tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(hf.repo_root() / "configs/tokenizer/mistral-v1/tokenizer.json"),
                                   bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_trainer(model, work: Path, reward_funcs, **config):
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(work), report_to=[], use_cpu=True, dataloader_num_workers=0,
                      **config)
    dataset = Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                              processing_class=tokenizer())
    return trainer


# ---- (a) the loss on fixed per-token log-probs -----------------------------------------------------------------------

ROWS, WIDTH = 4, 6
LENGTHS = [6, 3, 5, 1]  # completion tokens per row (the rest padding)


def fixed_tensors() -> dict:
    gen = torch.Generator().manual_seed(7101)
    d = dict(dtype=torch.float64)
    policy = -torch.rand(ROWS, WIDTH, generator=gen, **d) * 3 - 0.05
    # old policy within and outside the clip range of the policy (ratios from 0.6 to 1.5)
    old = policy + (torch.rand(ROWS, WIDTH, generator=gen, **d) - 0.5) * 0.9
    reference = policy + (torch.rand(ROWS, WIDTH, generator=gen, **d) - 0.5) * 1.2
    entropies = torch.rand(ROWS, WIDTH, generator=gen, **d) * 4
    mask = (torch.arange(WIDTH)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    advantages = torch.tensor([1.3, -0.7, 0.4, -1.1], **d)
    return {"policy": policy, "old": old, "reference": reference, "entropies": entropies, "mask": mask,
            "advantages": advantages}


LOSS_CASES = {  # name -> loss_type, beta, epsilon, epsilon_high, delta, accumulation, num_items_in_batch, max length
    "grpo": ("grpo", 0.0, 0.2, None, None, 1, None, 8),
    "grpo_beta": ("grpo", 0.04, 0.2, None, None, 2, None, 8),
    "bnpo": ("bnpo", 0.0, 0.2, 0.28, None, 1, None, 8),
    "bnpo_beta_accumulated": ("bnpo", 0.1, 0.2, None, None, 3, None, 8),
    "dr_grpo": ("dr_grpo", 0.0, 0.2, None, None, 1, None, 8),
    "dr_grpo_beta": ("dr_grpo", 0.04, 0.1, 0.3, None, 2, None, 7),
    "dapo": ("dapo", 0.0, 0.2, 0.28, None, 1, 15, 8),
    "dapo_accumulated_beta_delta": ("dapo", 0.04, 0.2, 0.28, 1.3, 2, 31, 8),
    "cispo": ("cispo", 0.0, 0.2, 1.2, None, 1, 15, 8),
    "sapo_beta": ("sapo", 0.02, 0.2, None, None, 2, None, 8),
}
LOGGED = ("kl", "entropy", "clip_ratio/low_mean", "clip_ratio/low_min", "clip_ratio/high_mean", "clip_ratio/high_max",
          "clip_ratio/region_mean", "cispo_clip_ratio")


def trl_compute_loss(trainer, name: str, t: dict, cases: dict = LOSS_CASES) -> dict:
    loss_type, beta, epsilon, epsilon_high, delta, accumulation, items, max_length = cases[name][:8]
    policy = t["policy"].clone().requires_grad_(True)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (policy, t["entropies"], None)
    trainer.loss_type, trainer.beta, trainer.max_completion_length = loss_type, beta, max_length
    trainer.epsilon_low = epsilon
    trainer.epsilon_high = epsilon_high if epsilon_high is not None else epsilon
    trainer.args.delta = delta
    trainer.args.steps_per_generation = accumulation
    trainer.current_gradient_accumulation_steps = accumulation
    trainer.aux_loss_enabled = False  # the fixed log-probs come from no model
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    inputs = {"prompt_ids": torch.zeros(ROWS, 2, dtype=torch.long), "prompt_mask": torch.ones(ROWS, 2, dtype=torch.long),
              "completion_ids": torch.zeros(ROWS, WIDTH, dtype=torch.long), "completion_mask": t["mask"],
              "advantages": t["advantages"], "old_per_token_logps": t["old"],
              "num_items_in_batch": torch.tensor(float(items if items is not None else t["mask"].sum()))}
    if beta != 0.0:
        inputs["ref_per_token_logps"] = t["reference"]
    if t.get("on_policy"):
        del inputs["old_per_token_logps"]
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if k in LOGGED}
    return {"loss_type": loss_type, "beta": beta, "epsilon": epsilon, "epsilon_high": epsilon_high, "delta": delta,
            "gradient_accumulation": accumulation, "num_items_in_batch": items, "max_completion_length": max_length,
            "loss": float(loss.detach()), "grad": policy.grad.tolist(), "metrics": logged}


def loss_cases(model, work: Path) -> dict:
    trainer = make_trainer(model, work, [lambda **k: [0.0] * len(k["prompts"])], num_generations=2,
                           per_device_train_batch_size=2)
    t = fixed_tensors()
    out = {"tensors": {k: v.tolist() for k, v in t.items()}, "sapo_temperature_pos": trainer.args.sapo_temperature_pos,
           "sapo_temperature_neg": trainer.args.sapo_temperature_neg, "cases": {}}
    for name in LOSS_CASES:
        out["cases"][name] = trl_compute_loss(trainer, name, t)
    return out


GSPO_CASES = {  # as LOSS_CASES, then whether old log-probs are given (False: on-policy, num_iterations 1)
    "gspo": ("grpo", 0.0, 3e-4, 4e-4, None, 1, None, 8, True),
    "gspo_beta_accumulated": ("grpo", 0.04, 3e-4, 4e-4, None, 2, None, 8, True),
    "gspo_on_policy_beta": ("grpo", 0.04, 3e-4, 4e-4, None, 1, None, 8, False),
    "gspo_bnpo": ("bnpo", 0.0, 0.05, 0.08, None, 1, None, 8, True),
    "gspo_dr_grpo_beta": ("dr_grpo", 0.1, 0.05, None, None, 2, None, 7, True),
    "gspo_dapo_delta": ("dapo", 0.04, 3e-4, 4e-4, 1.0002, 2, 31, 8, True),
    "gspo_cispo": ("cispo", 0.0, 0.2, 1.0, None, 1, 15, 8, True),
    "gspo_sapo_beta": ("sapo", 0.02, 0.2, None, None, 2, None, 8, True),
}
GSPO_MASKED_ROW = 1  # its completion masked whole (mask_truncated_completions): ratio 1, counted in the clip means


def gspo_loss_cases(model, work: Path) -> dict:
    trainer = make_trainer(model, work, [lambda **k: [0.0] * len(k["prompts"])], num_generations=2,
                           per_device_train_batch_size=2)
    trainer.importance_sampling_level = "sequence"
    t = fixed_tensors()
    t["mask"][GSPO_MASKED_ROW] = 0
    out = {"tensors": {k: v.tolist() for k, v in t.items()}, "lengths": LENGTHS,
           "sapo_temperature_pos": trainer.args.sapo_temperature_pos,
           "sapo_temperature_neg": trainer.args.sapo_temperature_neg, "cases": {}}
    for name, case in GSPO_CASES.items():
        record = trl_compute_loss(trainer, name, dict(t, on_policy=not case[8]), GSPO_CASES)
        record["importance_sampling_level"] = "sequence"
        record["old_per_token_logps"] = case[8]
        out["cases"][name] = record
    return out


# ---- (b) rewards and advantages on fixed completions -----------------------------------------------------------------

# Three prompts x num_generations 3; each completion's ids (EOS-ended, or cut at max_completion_length 5: truncated).
E = hf.EOS_ID
COMPLETIONS = [[10, 11, E], [12, E], [13, 14, 15, 16, 17],
               [20, E], [21, 22, 23, E], [24, 25, E],
               [30, 31, 32, 33, 34], [35, E], [36, 37, E]]
PROMPTS = [[1, 40, 41], [1, 42, 43, 44], [1, 45]]
FIXED = {  # reward function name -> its scores (None: TRL's "no reward for this completion")
    "accuracy": [1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.0, None, 2.0],
    "length": [0.3, -0.2, 0.9, 0.1, 0.7, 0.2, None, None, -0.4],
}
ADVANTAGE_CASES = {  # name -> reward functions, reward_weights, scale_rewards, aggregation, mask_truncated
    "group": (["accuracy"], None, "group", "sum_then_normalize", False),
    "batch": (["accuracy"], None, "batch", "sum_then_normalize", False),
    "none": (["accuracy"], None, "none", "sum_then_normalize", False),
    "two_funcs_weighted": (["accuracy", "length"], [1.0, 0.5], "group", "sum_then_normalize", False),
    "two_funcs_batch_masked": (["accuracy", "length"], [2.0, -1.0], "batch", "sum_then_normalize", True),
    "normalize_then_sum": (["accuracy", "length"], [1.0, 0.5], "group", "normalize_then_sum", False),
}


def fixed_reward(name: str):
    def reward(prompts, completions, completion_ids, **kwargs):
        assert kwargs["difficulty"] == [i // 3 for i in range(9)], "extra columns reach the reward function"
        return list(FIXED[name])

    reward.__name__ = name
    return reward


def patch_generation(trainer, prompts: list, completions: list) -> None:
    trainer._tokenize_prompts = lambda p: ([list(x) for x in prompts], None, {})
    trainer._generate_single_turn = lambda *a, **k: ([list(c) for c in completions], None)


def advantage_cases(model, work: Path) -> dict:
    out = {}
    for name, (funcs, weights, scale, aggregation, mask_truncated) in ADVANTAGE_CASES.items():
        trainer = make_trainer(model, work, [fixed_reward(f) for f in funcs], num_generations=3,
                               per_device_train_batch_size=9, max_completion_length=5, reward_weights=weights,
                               scale_rewards=scale, multi_objective_aggregation=aggregation,
                               mask_truncated_completions=mask_truncated)
        patch_generation(trainer, [p for p in PROMPTS for _ in range(3)], COMPLETIONS)
        trainer.model.train()
        inputs = [{"prompt": f"prompt {i // 3}", "difficulty": i // 3} for i in range(9)]
        batch = trainer._generate_and_score_completions(inputs)
        logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
        out[name] = {"reward_funcs": funcs, "reward_weights": weights, "scale_rewards": scale,
                     "multi_objective_aggregation": aggregation, "mask_truncated_completions": mask_truncated,
                     "rewards": [FIXED[f] for f in funcs], "advantages": batch["advantages"].tolist(),
                     "completion_mask": batch["completion_mask"].tolist(),
                     "num_items_in_batch": float(batch["num_items_in_batch"]), "metrics": logged}
    return {"num_generations": 3, "max_completion_length": 5, "eos_id": E, "pad_id": PAD, "prompts": PROMPTS,
            "completions": COMPLETIONS, "cases": out}


# ---- (b') TRL's own reward functions that need no other package ------------------------------------------------------

THINK_TEXTS = ["<think>\nreasoning\n</think>\nanswer", "<think>a</think>", "<think>\nno close", "answer first "
               "<think>x</think>", "<think>a</think> b <think>c</think>", "<think></think>", "", " <think>x</think>",
               "<think>\nline one\nline two\n</think>\n\nfinal\nlines"]
ID_LISTS = [[], [5], [5, 6], [5, 6, 7], [5, 5, 5, 5], [1, 2, 1, 2, 1, 2], [9, 8, 7, 9, 8, 7, 9], list(range(12)),
            [4] * 13, [3, 4, 3, 4, 5, 3, 4]]


def reward_cases() -> dict:
    from trl.rewards import get_repetition_penalty_reward, get_soft_overlong_punishment, think_format_reward

    out = {"think_texts": THINK_TEXTS, "ids": ID_LISTS,
           "think_format_reward": think_format_reward([[{"role": "assistant", "content": t}] for t in THINK_TEXTS]),
           "soft_overlong": [], "repetition": []}
    for max_len, cache in [(10, 4), (12, 0), (6, 6)]:
        func = get_soft_overlong_punishment(max_completion_len=max_len, soft_punish_cache=cache)
        out["soft_overlong"].append({"max_completion_len": max_len, "soft_punish_cache": cache, "name": func.__name__,
                                     "rewards": func(completion_ids=ID_LISTS)})
    for ngram, penalty in [(3, -1.0), (1, -0.5), (2, -2.0)]:
        func = get_repetition_penalty_reward(ngram_size=ngram, max_penalty=penalty)
        out["repetition"].append({"ngram_size": ngram, "max_penalty": penalty, "name": func.__name__,
                                  "rewards": func(completion_ids=ID_LISTS)})
    return out


# ---- (c) one step of TRL's GRPOTrainer on the tiny Mixtral ------------------------------------------------------------

STEP_PROMPT_LENGTHS = [5, 5]  # equal: TRL left-pads prompts, mixtune runs each row from position 0
STEP_COMPLETION_LENGTHS = [4, 6, 2, 6]  # two per prompt; the 6s are cut at max_completion_length (no EOS)
TOKEN_SEED = 7302
STEP_REWARDS = [0.5, -1.0, 2.0, None]
STEPS = {  # golden name -> loss_type, beta, temperature
    "dapo_beta": ("dapo", 0.04, 0.7),
    "grpo": ("grpo", 0.0, 1.0),
}


def step_reward(prompts, completions, completion_ids, **kwargs):
    return list(STEP_REWARDS)


def make_step_ids(vocab: int) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(TOKEN_SEED)
    draw = lambda n: torch.randint(3, vocab, (n,), generator=gen).tolist()  # noqa: E731  (no BOS/EOS/pad ids)
    prompts = [[1] + draw(n - 1) for n in STEP_PROMPT_LENGTHS]
    completions = [draw(n - 1) + [hf.EOS_ID] if n < 6 else draw(n) for n in STEP_COMPLETION_LENGTHS]
    return prompts, completions


def trl_step(name: str, case_dir: Path, prompts: list, completions: list, work: Path) -> tuple[dict, dict]:
    loss_type, beta, temperature = STEPS[name]
    trainable = sft.Trainable(sft.CASES[SFT_CASE], case_dir)
    trainer = make_trainer(trainable.model, work, [step_reward], num_generations=2, per_device_train_batch_size=4,
                           max_completion_length=6, loss_type=loss_type, beta=beta, temperature=temperature,
                           router_aux_loss_coef=trainable.config.router_aux_loss_coef)
    if "ref" in trainable.model.peft_config:
        trainable.model.delete_adapter("ref")
    trainable.model.set_adapter("default")
    trainable.model.train()
    patch_generation(trainer, [p for p in prompts for _ in range(2)], completions)
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([{"prompt": "p"} for _ in range(4)])
    trainable.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainable.model, batch)
    loss.backward()
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
    grads = trainable.adapter_tensors(of=lambda w: w.grad)
    zero = [k for k, g in grads.items() if not torch.any(g)]
    assert not zero, f"{name}: LoRA weights without gradient: {zero}"
    record = {"loss_type": loss_type, "beta": beta, "temperature": temperature, "loss": float(loss.detach()),
              "aux_coef": trainable.config.router_aux_loss_coef, "advantages": batch["advantages"].tolist(),
              "metrics": logged, "grads": f"grads_{name}.safetensors"}
    if "ref_per_token_logps" in batch:
        record["ref_per_token_logps"] = batch["ref_per_token_logps"].tolist()
    return record, grads


def step_batch(prompts: list, completions: list) -> dict:
    """The step golden's batch.json (GRPO's and RLOO's): the model, the adapter and the fixed ids and rewards."""
    return {"model": f"../../sft/{SFT_CASE}/model", "adapter": f"../../sft/{SFT_CASE}/adapter", "pad_id": PAD,
            "eos_id": hf.EOS_ID, "num_generations": 2, "max_completion_length": 6, "prompts": prompts,
            "completions": completions, "rewards": STEP_REWARDS}


def write_goldens(out: Path = GRPO_GOLDEN) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory() as work:
            if out.exists():
                shutil.rmtree(out)
            (out / "step").mkdir(parents=True)
            trainable = sft.Trainable(sft.CASES[SFT_CASE], sft.SFT_GOLDEN / SFT_CASE)
            mg.write_json(out / "losses.json", loss_cases(trainable.model, Path(work)))
            mg.write_json(out / "gspo_losses.json", gspo_loss_cases(trainable.model, Path(work)))
            mg.write_json(out / "advantages.json", advantage_cases(trainable.model, Path(work)))
            mg.write_json(out / "rewards.json", reward_cases())
            prompts, completions = make_step_ids(hf.TINY["vocab_size"])
            steps = {}
            for name in STEPS:
                record, grads = trl_step(name, sft.SFT_GOLDEN / SFT_CASE, prompts, completions, Path(work))
                save_file(grads, out / "step" / record["grads"], metadata={"format": "pt"})
                steps[name] = record
                print(f"grpo step {name}: loss {record['loss']:.6f}")
            mg.write_json(out / "step" / "batch.json", step_batch(prompts, completions))
            mg.write_json(out / "step" / "expected.json", steps)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    if argv:
        raise SystemExit("make_grpo_goldens.py takes no arguments")
    write_goldens()


if __name__ == "__main__":
    main(sys.argv[1:])
