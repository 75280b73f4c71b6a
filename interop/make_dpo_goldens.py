"""DPO goldens for the Java trainer: trainer/src/test/resources/golden/dpo/ (see interop/GOLDENS.md, "DPO").

Run: interop/.venv/bin/python interop/make_dpo_goldens.py

Two files of numbers, no model of their own:
- losses.json: fixed sequence log-probs (policy and reference, chosen and rejected, with completion lengths) through
  every loss mixtune offers (sigmoid, robust with label smoothing, ipo, hinge, reference-free sigmoid): per-pair
  loss, the mean, its gradient with respect to the policy log-probs, and TRL's metrics. The formulas are TRL 1.13's
  DPOTrainer._compute_loss (whose sigmoid ignores label_smoothing: only robust, exo_pair and aot read it), except
  reference_free, which TRL 1.x lacks (reference log-probs taken as 0, as TRL 0.x did).
- loss_types.json: the same log-probs through TRL 1.13's other loss types (exo_pair, nca_pair, bco_pair, sppo_hard,
  aot, aot_unpaired, apo_zero, apo_down, discopop, sigmoid_norm, with TRL's defaults and some other hyper-parameters)
  and weighted combinations (MPO's [sigmoid, bco_pair, sft] with [0.8, 0.2, 1.0]), computed by TRL's own
  DPOTrainer._compute_loss on a stand-in model whose completion log-probs are the fixed ones: TRL's loss, its logged
  rewards and d loss / d policy log-probs, in float64. The same harness gives the formulas' loss on losses.json's
  cases (asserted).
- f_divergence.json: the same harness with TRL's f_divergence_type forward_kl, js_divergence and alpha_divergence
  (f_alpha_divergence_coef 0.5, 1, 3, 20) over the loss types TRL lets them regularise.
- step/: one forward/backward of TRL's own DPOTrainer._compute_loss on the tiny Mixtral of the SFT golden
  (golden/sft/mixtral: its checkpoint and random PEFT adapter) with three preference pairs, the reference being the
  model with its adapter off: loss, TRL's logged metrics and every LoRA gradient, per loss type (sigmoid, ipo, hinge,
  and sigmoid plus TRL's "sft" term with weight 0.5, which is mixtune's dpo.sft_weight). The same per-pair log-probs
  through the formulas of losses.json must give TRL's loss: the script asserts it, tying the two files together.
  The metrics hold TRL's logits/chosen, logits/rejected, entropy and mean_token_accuracy too, which the script
  recomputes from the policy's logits (logit_metrics) and asserts equal to TRL's. step/ld_alpha.json: the same step with TRL's ld_alpha
  (LD-DPO) at 0.5 ([sigmoid, sft]) and 0 (ipo), asserted against log-probs split at each pair's shorter length here;
  step/use_weighting.json: with TRL's use_weighting (WPO; sigmoid, and ipo with ld_alpha 0.5), asserted against pair
  weights computed here from the policy's logits.
  step/eval.json: TRL's DPOTrainer.prediction_step (what Trainer.evaluate runs on each batch) on the same pairs, the
  model in eval mode, sigmoid: eval_loss holds router_aux_loss_coef x the router loss (_compute_loss adds it whatever
  the mode), asserted against the formula here.
Deterministic: fixed seeds, float32, one torch thread.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import hf_models as hf
import make_goldens as mg
import make_sft_goldens as sft

DPO_GOLDEN = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "dpo"
SFT_CASE = "mixtral"
PAD = hf.EOS_ID  # mixtune pads with EOS, as TRL does when the tokenizer has no pad token
BETA = 0.1
SFT_WEIGHT = 0.5

# ---- the formulas --------------------------------------------------------------------------------------------------


def per_pair_loss(loss: str, beta: float, label_smoothing: float, pc, pr, rc, rr, len_c, len_r) -> torch.Tensor:
    """Per-pair loss from summed completion log-probs (policy pc/pr, reference rc/rr) as TRL computes it."""
    if loss == "ipo":  # TRL: log-ratios divided by the completion length (the IPO authors' normalisation)
        d = (pc - rc) / len_c.clamp(min=1) - (pr - rr) / len_r.clamp(min=1)
        return (d - 1 / (2 * beta)) ** 2
    d = (pc - rc) - (pr - rr)
    if loss == "hinge":
        return torch.relu(1 - beta * d)
    if loss == "robust":  # Chowdhury et al. 2024: unbiased under labels flipped with probability label_smoothing
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * d)
        flipped = -label_smoothing * F.logsigmoid(-beta * d)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    assert loss == "sigmoid"
    return -F.logsigmoid(beta * d)


def metrics(beta: float, pc, pr, rc, rr) -> dict[str, float]:
    """TRL's logged metrics of one batch (means over its pairs)."""
    chosen, rejected = beta * (pc - rc).detach(), beta * (pr - rr).detach()
    return {"rewards/chosen": float(chosen.mean()), "rewards/rejected": float(rejected.mean()),
            "rewards/accuracies": float((chosen > rejected).float().mean()),
            "rewards/margins": float((chosen - rejected).mean()),
            "logps/chosen": float(pc.detach().mean()), "logps/rejected": float(pr.detach().mean())}


# ---- (a) fixed log-probs -------------------------------------------------------------------------------------------

LOGPS = {  # four pairs: one the policy prefers clearly, one it gets wrong, one near a tie, one with long completions
    "policy_chosen": [-12.5, -30.25, -7.0, -95.5],
    "policy_rejected": [-20.0, -22.5, -7.125, -80.0],
    "reference_chosen": [-14.0, -28.0, -7.5, -90.0],
    "reference_rejected": [-18.5, -25.0, -7.0, -88.25],
    "chosen_lengths": [5, 11, 3, 40],
    "rejected_lengths": [7, 9, 3, 33],
}

VARIANTS = {
    "sigmoid": dict(loss_type="sigmoid", beta=0.1, label_smoothing=0.0, reference_free=False),
    "robust": dict(loss_type="robust", beta=0.1, label_smoothing=0.2, reference_free=False),
    "sigmoid_beta_0.5": dict(loss_type="sigmoid", beta=0.5, label_smoothing=0.0, reference_free=False),
    "ipo": dict(loss_type="ipo", beta=0.1, label_smoothing=0.0, reference_free=False),
    "hinge": dict(loss_type="hinge", beta=0.1, label_smoothing=0.0, reference_free=False),
    "reference_free": dict(loss_type="sigmoid", beta=0.1, label_smoothing=0.0, reference_free=True),
}


def fixed_logps_cases() -> dict:
    cases = {}
    for name, v in VARIANTS.items():
        pc = torch.tensor(LOGPS["policy_chosen"], dtype=torch.float64, requires_grad=True)
        pr = torch.tensor(LOGPS["policy_rejected"], dtype=torch.float64, requires_grad=True)
        zero = torch.zeros(4, dtype=torch.float64)
        rc = zero if v["reference_free"] else torch.tensor(LOGPS["reference_chosen"], dtype=torch.float64)
        rr = zero if v["reference_free"] else torch.tensor(LOGPS["reference_rejected"], dtype=torch.float64)
        len_c = torch.tensor(LOGPS["chosen_lengths"], dtype=torch.float64)
        len_r = torch.tensor(LOGPS["rejected_lengths"], dtype=torch.float64)
        losses = per_pair_loss(v["loss_type"], v["beta"], v["label_smoothing"], pc, pr, rc, rr, len_c, len_r)
        loss = losses.mean()
        loss.backward()
        cases[name] = {**v, "per_pair_loss": losses.tolist(), "loss": float(loss.detach()),
                       "grad_policy_chosen": pc.grad.tolist(), "grad_policy_rejected": pr.grad.tolist(),
                       "metrics": metrics(v["beta"], pc, pr, rc, rr)}
    return {"logps": LOGPS, "cases": cases}


# ---- (a') every other TRL 1.13 loss type, by TRL's own code on the same log-probs ---------------------------------

# TRL's loss_type values beyond those above, each with TRL's defaults (discopop_tau 0.05; exo_pair needs label smoothing
# above 0, 1e-3 as the EXO paper recommends), aot with label smoothing too, and MPO's combination (TRL's docs:
# loss_type [sigmoid, bco_pair, sft], loss_weights [0.8, 0.2, 1.0]).
TRL_LOSS_TYPES = {
    "exo_pair": dict(loss_type=["exo_pair"], label_smoothing=1e-3),
    "exo_pair_0.2": dict(loss_type=["exo_pair"], label_smoothing=0.2),
    "nca_pair": dict(loss_type=["nca_pair"]),
    "bco_pair": dict(loss_type=["bco_pair"]),
    "sppo_hard": dict(loss_type=["sppo_hard"]),
    "aot": dict(loss_type=["aot"]),
    "aot_0.1": dict(loss_type=["aot"], label_smoothing=0.1),
    "aot_unpaired": dict(loss_type=["aot_unpaired"]),
    "aot_unpaired_0.1": dict(loss_type=["aot_unpaired"], label_smoothing=0.1),
    "apo_zero": dict(loss_type=["apo_zero"]),
    "apo_down": dict(loss_type=["apo_down"]),
    "discopop": dict(loss_type=["discopop"]),
    "discopop_tau_0.5": dict(loss_type=["discopop"], discopop_tau=0.5),
    "sigmoid_norm": dict(loss_type=["sigmoid_norm"]),
    "sigmoid_norm_beta_0.5": dict(loss_type=["sigmoid_norm"], beta=0.5),
    "sigmoid_robust": dict(loss_type=["sigmoid", "robust"], loss_weights=[0.5, 2.0], label_smoothing=0.2),
    "mpo": dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]),
}


class _Outputs:
    def __init__(self, logits):
        self.logits = logits


class _LogitsOfLogProbs(torch.nn.Module):
    """A "model" over a two-token vocabulary whose logits give each completion token of row r the log-probability
    logps[r] / length[r] of token 0 (the label everywhere): l = q - log(1 - e^q) makes log_softmax([l, 0])[0] = q. TRL's
    summed completion log-probs are then the given ones, differentiably, and the sft term is their mean per token."""

    def __init__(self, logps, lengths, width):
        super().__init__()
        self.logps, self.lengths, self.width = logps, lengths, width

    def forward(self, input_ids, attention_mask, use_cache):
        q = self.logps / self.lengths
        token0 = q - torch.log(-torch.expm1(q))
        logits = torch.zeros(len(q), self.width, 2, dtype=self.logps.dtype)
        positions = torch.arange(self.width)[None, :] < self.lengths[:, None]
        logits = logits + (positions[..., None] * F.pad(token0[:, None, None], (0, 1)))
        return _Outputs(logits)


class _OneProcess:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def trl_compute_loss(loss_type, loss_weights, beta, label_smoothing, discopop_tau, pc, pr, rc, rr, len_c, len_r,
                     f_divergence_type="reverse_kl", f_alpha_divergence_coef=0.5):
    """TRL 1.13's DPOTrainer._compute_loss itself, on an instance holding only what it reads, with the reference
    log-probs precomputed (TRL's precompute_ref_log_probs path) and the policy's from _LogitsOfLogProbs (in the dtype
    of pc)."""
    from collections import defaultdict
    from types import SimpleNamespace

    from trl import DPOTrainer

    trainer = DPOTrainer.__new__(DPOTrainer)
    lengths = torch.cat([len_c, len_r])
    width = int(lengths.max()) + 1
    model = _LogitsOfLogProbs(torch.cat([pc, pr]), lengths, width)
    model.train()
    vars(trainer).update(model=model, accelerator=_OneProcess(), aux_loss_enabled=False, ld_alpha=None,
                         precompute_ref_logps=True, f_divergence_type=f_divergence_type,
                         f_alpha_divergence_coef=f_alpha_divergence_coef, loss_types=loss_type,
                         loss_weights=loss_weights, beta=beta, label_smoothing=label_smoothing, use_weighting=False,
                         args=SimpleNamespace(discopop_tau=discopop_tau),
                         _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0,
                         _tp_size=1)
    rows = len(lengths)
    completion = (torch.arange(width)[None, :] >= 1) & (torch.arange(width)[None, :] <= lengths[:, None])
    inputs = {"input_ids": torch.zeros(rows, width, dtype=torch.long),
              "attention_mask": torch.ones(rows, width, dtype=torch.long),
              "completion_mask": completion.long(), "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def trl_loss_type_cases() -> dict:
    """TRL's loss, logged rewards and d loss / d policy log-probs per case. The same harness on the losses of
    losses.json gives their formulas' loss (asserted), which ties the harness to TRL's trainer as the step goldens do."""
    fixed = fixed_logps_cases()["cases"]
    for name, v in fixed.items():
        if v["reference_free"]:
            continue
        t = lambda key: torch.tensor(LOGPS[key], dtype=torch.float64)  # noqa: E731
        loss, _ = trl_compute_loss([v["loss_type"]], [1.0], v["beta"], v["label_smoothing"], 0.05,
                                   t("policy_chosen"), t("policy_rejected"), t("reference_chosen"),
                                   t("reference_rejected"), t("chosen_lengths"), t("rejected_lengths"))
        assert math.isclose(float(loss), v["loss"], rel_tol=1e-12), (name, float(loss), v["loss"])
    cases = {}
    for name, v in TRL_LOSS_TYPES.items():
        v = {"beta": BETA, "label_smoothing": 0.0, "discopop_tau": 0.05, **v}
        v["loss_weights"] = v.get("loss_weights", [1.0] * len(v["loss_type"]))
        pc = torch.tensor(LOGPS["policy_chosen"], dtype=torch.float64, requires_grad=True)
        pr = torch.tensor(LOGPS["policy_rejected"], dtype=torch.float64, requires_grad=True)
        rc = torch.tensor(LOGPS["reference_chosen"], dtype=torch.float64)
        rr = torch.tensor(LOGPS["reference_rejected"], dtype=torch.float64)
        len_c = torch.tensor(LOGPS["chosen_lengths"], dtype=torch.float64)
        len_r = torch.tensor(LOGPS["rejected_lengths"], dtype=torch.float64)
        loss, logged = trl_compute_loss(v["loss_type"], v["loss_weights"], v["beta"], v["label_smoothing"],
                                        v["discopop_tau"], pc, pr, rc, rr, len_c, len_r)
        loss.backward()
        # The "model" hands TRL the log-probs unchanged, so its metrics are those of the formulas above.
        mine = metrics(v["beta"], pc, pr, rc, rr)
        for key, value in mine.items():
            assert math.isclose(value, logged[key], rel_tol=1e-12, abs_tol=1e-12), (name, key, value, logged[key])
        cases[name] = {**v, "loss": float(loss.detach()), "grad_policy_chosen": pc.grad.tolist(),
                       "grad_policy_rejected": pr.grad.tolist(), "metrics": {k: logged[k] for k in mine}}
    return {"logps": LOGPS, "cases": cases}


# ---- (a'') f_divergence_type (f-DPO), by TRL's own code on the same log-probs --------------------------------------

# Each of TRL's f-divergences over the losses it applies them to (those built on the chosen - rejected difference).
# alpha_divergence runs in float32, the dtype TRL's clamp of its exponent is written for (TRL has no float64 bound):
# alpha 0.5 (TRL's default), 1 (TRL's limit case: reverse KL), 3, and 20, whose exponent on the fourth pair's rejected
# side passes TRL's bound of 80.
F_DIVERGENCE = {
    "forward_kl_sigmoid": dict(f_divergence_type="forward_kl", loss_type=["sigmoid"]),
    "forward_kl_ipo": dict(f_divergence_type="forward_kl", loss_type=["ipo"]),
    "forward_kl_robust_0.1": dict(f_divergence_type="forward_kl", loss_type=["robust"], label_smoothing=0.1),
    "forward_kl_sigmoid_sft": dict(f_divergence_type="forward_kl", loss_type=["sigmoid", "sft"],
                                   loss_weights=[1.0, 0.5]),
    "js_divergence_sigmoid": dict(f_divergence_type="js_divergence", loss_type=["sigmoid"]),
    "js_divergence_hinge": dict(f_divergence_type="js_divergence", loss_type=["hinge"]),
    "js_divergence_exo_pair": dict(f_divergence_type="js_divergence", loss_type=["exo_pair"], label_smoothing=1e-3),
    "js_divergence_sigmoid_norm": dict(f_divergence_type="js_divergence", loss_type=["sigmoid_norm"]),
    "alpha_divergence_sigmoid": dict(f_divergence_type="alpha_divergence", loss_type=["sigmoid"]),
    "alpha_divergence_1_sigmoid": dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.0,
                                       loss_type=["sigmoid"]),
    "alpha_divergence_3_robust_0.1": dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=3.0,
                                          loss_type=["robust"], label_smoothing=0.1),
    "alpha_divergence_discopop": dict(f_divergence_type="alpha_divergence", loss_type=["discopop"]),
    "alpha_divergence_20_hinge": dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=20.0,
                                      loss_type=["hinge"]),
    "alpha_divergence_sigmoid_ipo": dict(f_divergence_type="alpha_divergence", loss_type=["sigmoid", "ipo"],
                                         loss_weights=[0.5, 2.0]),
}


def stand_in_logps(pc, pr, len_c, len_r) -> torch.Tensor:
    """The summed completion log-probs TRL's _compute_loss reads from _LogitsOfLogProbs, by TRL's own steps."""
    from trl.trainer.utils import selective_log_softmax

    lengths = torch.cat([len_c, len_r])
    width = int(lengths.max()) + 1
    logits = _LogitsOfLogProbs(torch.cat([pc, pr]), lengths, width)(None, None, False).logits
    completion = (torch.arange(width)[None, :] >= 1) & (torch.arange(width)[None, :] <= lengths[:, None])
    per_token = selective_log_softmax(logits[..., :-1, :], torch.zeros(len(lengths), width - 1, dtype=torch.long))
    per_token[completion[..., 1:] == 0] = 0.0
    return per_token.sum(dim=1)


def trl_f_divergence_cases() -> dict:
    """TRL's loss, logged rewards (of the log-ratios, whatever the divergence) and d loss / d policy log-probs."""
    cases = {}
    for name, v in F_DIVERGENCE.items():
        v = {"beta": BETA, "label_smoothing": 0.0, "discopop_tau": 0.05, "f_alpha_divergence_coef": 0.5, **v}
        v["loss_weights"] = v.get("loss_weights", [1.0] * len(v["loss_type"]))
        dtype = torch.float32 if v["f_divergence_type"] == "alpha_divergence" else torch.float64
        v["dtype"] = str(dtype).removeprefix("torch.")
        t = lambda key: torch.tensor(LOGPS[key], dtype=dtype)  # noqa: E731
        pc = t("policy_chosen").requires_grad_()
        pr = t("policy_rejected").requires_grad_()
        loss, logged = trl_compute_loss(v["loss_type"], v["loss_weights"], v["beta"], v["label_smoothing"],
                                        v["discopop_tau"], pc, pr, t("reference_chosen"), t("reference_rejected"),
                                        t("chosen_lengths"), t("rejected_lengths"), v["f_divergence_type"],
                                        v["f_alpha_divergence_coef"])
        loss.backward()
        if dtype == torch.float32:
            # In float32 the stand-in model's logits give back the log-probs only to float32 rounding, which the
            # exponent of alpha_divergence amplifies: the case holds the policy log-probs TRL read, for the Java side.
            read = stand_in_logps(pc.detach(), pr.detach(), t("chosen_lengths"), t("rejected_lengths"))
            v["policy_chosen"], v["policy_rejected"] = read[:len(pc)].tolist(), read[len(pc):].tolist()
            assert float(read[:len(pc)].mean()) == logged["logps/chosen"], (name, read, logged["logps/chosen"])
            assert float(read[len(pc):].mean()) == logged["logps/rejected"], (name, read, logged["logps/rejected"])
        mine = metrics(v["beta"], pc, pr, t("reference_chosen"), t("reference_rejected"))
        tolerance = 1e-12 if dtype == torch.float64 else 1e-6
        for key, value in mine.items():
            assert math.isclose(value, logged[key], rel_tol=tolerance, abs_tol=tolerance), (name, key, value,
                                                                                             logged[key])
        cases[name] = {**v, "loss": float(loss.detach()), "grad_policy_chosen": pc.grad.tolist(),
                       "grad_policy_rejected": pr.grad.tolist(), "metrics": {k: logged[k] for k in mine}}
    return {"logps": LOGPS, "cases": cases}


# ---- (b) one step of TRL's DPOTrainer on the tiny Mixtral ----------------------------------------------------------

# (prompt length, chosen length, rejected length) per pair; completions end with EOS. The second pair's answers share
# their first three tokens; the third has a one-token rejected answer (just EOS).
PAIRS = [(6, 5, 8), (3, 7, 4), (9, 4, 1)]
TOKEN_SEED = 6301


def make_pairs(vocab: int) -> list[dict[str, list[int]]]:
    gen = torch.Generator().manual_seed(TOKEN_SEED)
    draw = lambda n: torch.randint(3, vocab, (n,), generator=gen).tolist()  # noqa: E731  (no BOS/EOS/pad ids)
    pairs = []
    for i, (prompt, chosen, rejected) in enumerate(PAIRS):
        chosen_ids = draw(chosen - 1) + [hf.EOS_ID]
        rejected_ids = draw(rejected - 1) + [hf.EOS_ID]
        if i == 1:
            rejected_ids[:3] = chosen_ids[:3]
        pairs.append({"prompt_ids": [1] + draw(prompt - 1), "chosen_ids": chosen_ids, "rejected_ids": rejected_ids})
    return pairs


LOSS_TYPES = {  # golden name -> TRL's loss_type and loss_weights
    "sigmoid": (["sigmoid"], [1.0]),
    "ipo": (["ipo"], [1.0]),
    "hinge": (["hinge"], [1.0]),
    "sigmoid_sft": (["sigmoid", "sft"], [1.0, SFT_WEIGHT]),
}


# LD-DPO steps (TRL's ld_alpha): name -> loss_type, loss_weights, ld_alpha. Every pair's answers differ in length; the
# sft term (the chosen tokens' NLL) is not length-desensitised in TRL.
LD_ALPHA_STEPS = {
    "sigmoid_sft_ld_0.5": (["sigmoid", "sft"], [1.0, SFT_WEIGHT], 0.5),
    "ipo_ld_0": (["ipo"], [1.0], 0.0),
}


# WPO steps (TRL's use_weighting): name -> loss_type, loss_weights, ld_alpha. TRL's sft term cannot be weighted (its
# in-place product with the weights fails), nor aot's sorted pairs (TRL refuses them).
WPO_STEPS = {
    "sigmoid_wpo": (["sigmoid"], [1.0], None),
    "ipo_wpo_ld_0.5": (["ipo"], [1.0], 0.5),
}


def trl_trainer(case_dir: Path, loss_type: list[str], loss_weights: list[float], work: Path, ld_alpha=None,
                use_weighting=False):
    """TRL's DPOTrainer on the SFT golden's PEFT model. Given a PeftModel, TRL copies the adapter into a frozen "ref"
    adapter (the reference for a pretrained adapter); deleting it makes TRL take the reference with adapters off, the
    base model: the golden's reference, and mixtune's at stage 1 without model.adapter."""
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(hf.repo_root() / "configs/tokenizer/mistral-v1/tokenizer.json"),
                                        bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    trainable = sft.Trainable(sft.CASES[SFT_CASE], case_dir)
    args = DPOConfig(output_dir=str(work), beta=BETA, loss_type=loss_type, loss_weights=loss_weights,
                     per_device_train_batch_size=len(PAIRS), report_to=[], use_cpu=True, max_length=None,
                     ld_alpha=ld_alpha, use_weighting=use_weighting,
                     precompute_ref_log_probs=False, dataloader_num_workers=0,
                     # TRL's own default is 0.001; mixtune, as transformers, takes the model config's coefficient.
                     router_aux_loss_coef=trainable.config.router_aux_loss_coef)
    dataset = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(model=trainable.model, args=args, train_dataset=dataset, processing_class=tokenizer)
    if "ref" in trainable.model.peft_config:
        trainable.model.delete_adapter("ref")
    trainable.model.set_adapter("default")
    trainable.model.train()
    return trainer, trainable


def collate(trainer, pairs):
    batch = trainer.data_collator(pairs)
    assert int(trainer.processing_class.pad_token_id) == PAD
    return batch


def sequence_logps(model, batch, adapters: bool, ld_alpha: float | None = None) -> torch.Tensor:
    """Summed completion log-probs per row, computed here (not by TRL) to check the formulas against TRL's loss. With
    ld_alpha (LD-DPO), a row's completion tokens past the shorter side's count of its pair count ld_alpha times."""
    with torch.no_grad():
        if adapters:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        else:
            with model.disable_adapter():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               use_cache=False).logits
    per_token = torch.gather(logits[:, :-1].log_softmax(-1), 2, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["completion_mask"][:, 1:]
    if ld_alpha is None:
        return (per_token * mask).sum(1)
    counts = mask.sum(1)
    pairs = len(counts) // 2
    shared = torch.minimum(counts[:pairs], counts[pairs:]).repeat(2)
    position = mask.cumsum(1)  # the k-th completion token of its row, from 1
    weight = torch.where(position <= shared[:, None], 1.0, ld_alpha) * mask
    return (per_token * weight).sum(1)


LOGIT_METRICS = ("logits/chosen", "logits/rejected", "entropy", "mean_token_accuracy")


def logit_metrics(model, batch, pairs: int) -> dict[str, float]:
    """TRL's metrics of the policy's logits at the completion tokens, computed here: logits/chosen and logits/rejected
    the mean over the side's completion tokens of each token's mean logit over the vocabulary (tokens pooled across the
    batch, not a mean of per-sequence means), entropy over both sides' completion tokens, mean_token_accuracy the share
    of chosen completion tokens that are their logits' argmax."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logits = logits[:, :-1]
    mask = batch["completion_mask"][:, 1:].bool()
    labels = batch["input_ids"][:, 1:]
    log_probs = logits.log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return {"logits/chosen": float(logits[:pairs][mask[:pairs]].mean()),
            "logits/rejected": float(logits[pairs:][mask[pairs:]].mean()),
            "entropy": float(entropy[mask].mean()),
            "mean_token_accuracy": float((logits[:pairs].argmax(-1) == labels[:pairs])[mask[:pairs]].float().mean())}


def wpo_weights(model, batch, pairs: int) -> torch.Tensor:
    """WPO's pair weights computed here: per row exp(mean over its completion tokens of log p(token) - log sum p^2),
    the product of a pair's two rows."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    log_probs = logits[:, :-1].double().log_softmax(-1)
    token = torch.gather(log_probs, 2, batch["input_ids"][:, 1:, None])[..., 0]
    log_squares = torch.log((log_probs.exp() ** 2).sum(-1))
    mask = batch["completion_mask"][:, 1:]
    rows = torch.exp(((token - log_squares) * mask).sum(1) / mask.sum(1).clamp(min=1))
    return rows[:pairs] * rows[pairs:]


def trl_step(name: str, case_dir: Path, pairs, work: Path, ld_alpha=None,
             use_weighting=False) -> tuple[dict, dict[str, torch.Tensor]]:
    loss_type, loss_weights = (WPO_STEPS[name][:2] if use_weighting else LOSS_TYPES[name] if ld_alpha is None
                               else LD_ALPHA_STEPS[name][:2])
    trainer, trainable = trl_trainer(case_dir, loss_type, loss_weights, work, ld_alpha, use_weighting)
    batch = collate(trainer, pairs)
    trainable.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainable.model, batch, return_outputs=False)
    loss.backward()
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    grads = trainable.adapter_tensors(of=lambda w: w.grad)
    zero = [k for k, g in grads.items() if not torch.any(g)]
    assert not zero, f"{name}: LoRA weights without gradient: {zero}"

    # The formulas of losses.json on this batch's log-probs give TRL's loss and metrics.
    n = len(pairs)
    policy = sequence_logps(trainable.model, batch, adapters=True, ld_alpha=ld_alpha)
    reference = sequence_logps(trainable.model, batch, adapters=False, ld_alpha=ld_alpha)
    chosen_tokens = sequence_logps(trainable.model, batch, adapters=True)[:len(pairs)]
    lengths = batch["completion_mask"].sum(1).double()
    main = per_pair_loss(loss_type[0], BETA, 0.0, policy[:n].double(), policy[n:].double(), reference[:n].double(),
                         reference[n:].double(), lengths[:n], lengths[n:])
    main = (main * wpo_weights(trainable.model, batch, n) if use_weighting else main).mean()
    nll = -chosen_tokens.sum() / batch["completion_mask"][:n, 1:].sum()
    aux = trl_metrics.get("aux_loss", 0.0)
    formula = float(main) + (SFT_WEIGHT * float(nll) if "sft" in loss_type else 0.0) \
        + trainable.config.router_aux_loss_coef * aux
    assert math.isclose(formula, float(loss.detach()), rel_tol=1e-5), (name, formula, float(loss.detach()))
    mine = metrics(BETA, policy[:n], policy[n:], reference[:n], reference[n:])
    for key, value in mine.items():
        assert math.isclose(value, trl_metrics[key], rel_tol=1e-5, abs_tol=1e-7), (name, key, value, trl_metrics[key])
    mine_logits = logit_metrics(trainable.model, batch, n)
    for key, value in mine_logits.items():
        assert math.isclose(value, trl_metrics[key], rel_tol=1e-5, abs_tol=1e-7), (name, key, value, trl_metrics[key])
    record = {"loss_type": loss_type, "loss_weights": loss_weights, **({} if ld_alpha is None else {"ld_alpha": ld_alpha}),
              **({"use_weighting": True} if use_weighting else {}),
              "loss": float(loss.detach()),
              "dpo_loss": float(main), "nll": float(nll), "aux_loss": aux,
              "aux_coef": trainable.config.router_aux_loss_coef,
              "policy_logps": policy.tolist(), "reference_logps": reference.tolist(),
              "metrics": {k: trl_metrics[k] for k in (*mine, *LOGIT_METRICS)}, "grads": f"grads_{name}.safetensors"}
    return record, grads


def trl_eval(case_dir: Path, pairs, work: Path) -> dict:
    """TRL's DPOTrainer.prediction_step on the pairs, sigmoid, the model in eval mode (no dropout, no gradient): the
    loss Trainer.evaluate averages into eval_loss, and its parts."""
    trainer, trainable = trl_trainer(case_dir, ["sigmoid"], [1.0], work)
    trainable.model.eval()
    batch = collate(trainer, pairs)
    loss, _, _ = trainer.prediction_step(trainable.model, batch, prediction_loss_only=True)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    n = len(pairs)
    policy = sequence_logps(trainable.model, batch, adapters=True)
    reference = sequence_logps(trainable.model, batch, adapters=False)
    lengths = batch["completion_mask"].sum(1).double()
    main = per_pair_loss("sigmoid", BETA, 0.0, policy[:n].double(), policy[n:].double(), reference[:n].double(),
                         reference[n:].double(), lengths[:n], lengths[n:]).mean()
    aux = trl_metrics["aux_loss"]
    coef = trainable.config.router_aux_loss_coef
    assert aux > 0 and coef > 0, (aux, coef)
    assert math.isclose(float(main) + coef * aux, float(loss), rel_tol=1e-5), (float(main), coef * aux, float(loss))
    return {"loss_type": ["sigmoid"], "loss_weights": [1.0], "eval_loss": float(loss), "dpo_loss": float(main),
            "aux_loss": aux, "aux_coef": coef, "policy_logps": policy.tolist(), "reference_logps": reference.tolist()}


def write_goldens(out: Path = DPO_GOLDEN) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _write_goldens(out)
    finally:
        torch.set_num_threads(threads)


def _write_goldens(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    (out / "step").mkdir(parents=True)
    mg.write_json(out / "losses.json", fixed_logps_cases())
    mg.write_json(out / "loss_types.json", trl_loss_type_cases())
    mg.write_json(out / "f_divergence.json", trl_f_divergence_cases())

    case_dir = sft.SFT_GOLDEN / SFT_CASE
    pairs = make_pairs(hf.TINY["vocab_size"])
    steps = {}
    with tempfile.TemporaryDirectory() as work:
        for name in LOSS_TYPES:
            record, grads = trl_step(name, case_dir, pairs, Path(work))
            save_file(grads, out / "step" / record["grads"], metadata={"format": "pt"})
            steps[name] = record
            m = record["metrics"]
            print(f"dpo step {name}: loss {record['loss']:.6f}, accuracies {m['rewards/accuracies']:.3f}, "
                  f"margins {m['rewards/margins']:.5f}")
        ld_steps = {}
        for name, (_, _, ld_alpha) in LD_ALPHA_STEPS.items():
            record, grads = trl_step(name, case_dir, pairs, Path(work), ld_alpha)
            save_file(grads, out / "step" / record["grads"], metadata={"format": "pt"})
            ld_steps[name] = record
            print(f"dpo step {name}: loss {record['loss']:.6f}, margins {record['metrics']['rewards/margins']:.5f}")
        wpo_steps = {}
        for name, (_, _, ld_alpha) in WPO_STEPS.items():
            record, grads = trl_step(name, case_dir, pairs, Path(work), ld_alpha, use_weighting=True)
            save_file(grads, out / "step" / record["grads"], metadata={"format": "pt"})
            wpo_steps[name] = record
            print(f"dpo step {name}: loss {record['loss']:.6f}, margins {record['metrics']['rewards/margins']:.5f}")
        trainer, _ = trl_trainer(case_dir, ["sigmoid"], [1.0], Path(work))
        collated = collate(trainer, pairs)
        evaluation = {"sigmoid": trl_eval(case_dir, pairs, Path(work))}
        print(f"dpo eval sigmoid: eval_loss {evaluation['sigmoid']['eval_loss']:.6f} "
              f"(aux_loss {evaluation['sigmoid']['aux_loss']:.6f})")
    mg.write_json(out / "step" / "batch.json", {
        "model": f"../../sft/{SFT_CASE}/model", "adapter": f"../../sft/{SFT_CASE}/adapter", "pad_id": PAD,
        "beta": BETA, "sft_weight": SFT_WEIGHT, "pairs": pairs,
        "collated": {k: collated[k].tolist() for k in ("input_ids", "attention_mask", "completion_mask")}})
    mg.write_json(out / "step" / "expected.json", steps)
    mg.write_json(out / "step" / "ld_alpha.json", ld_steps)
    mg.write_json(out / "step" / "use_weighting.json", wpo_steps)
    mg.write_json(out / "step" / "eval.json", evaluation)


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    if argv:
        raise SystemExit("make_dpo_goldens.py takes no arguments")
    write_goldens()


if __name__ == "__main__":
    main(sys.argv[1:])
