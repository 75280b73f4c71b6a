"""ORPO, CPO and SimPO goldens (see interop/GOLDENS.md, "ORPO, CPO and SimPO"), all from TRL 1.13's own experimental
ORPOTrainer and CPOTrainer code (trl/experimental/orpo, trl/experimental/cpo):

- trainer/src/test/resources/golden/orpo/losses.json: fixed per-pair log-probs and a fixed NLL through the trainers'
  own get_batch_loss_metrics (odds_ratio_loss, cpo_loss and the metrics they log), their concatenated_forward replaced
  by one that returns the fixed values: the loss, d loss / d (chosen, rejected, nll) and TRL's logged metrics, for ORPO
  and every CPO loss_type (sigmoid, hinge, ipo, simpo, label smoothing, cpo_alpha), in float64.
- trainer/src/test/resources/golden/orpo/step/: one forward/backward of get_batch_loss_metrics on the tiny Mixtral of
  the SFT golden (its checkpoint and random PEFT adapter) over three pairs collated by TRL's DPODataCollatorWithPadding:
  loss, TRL's metrics and every LoRA gradient, for ORPO, CPO sigmoid and SimPO.
- data-pipeline/src/test/resources/golden/preference/trl-orpo-tokenized.json: the first pairs of data/samples/preferences.jsonl through
  ORPOTrainer's own dataset maps (maybe_extract_prompt, maybe_apply_chat_template, tokenize_row) with the Mistral
  template and a max_length no pair reaches, and a few standard (string) pairs.

Run: interop/.venv/bin/python interop/make_orpo_goldens.py
Deterministic: fixed seeds, float32 (float64 for losses.json), one torch thread.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import types
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
from make_dpo_goldens import make_pairs
from make_preference_goldens import MISTRAL, tokenizer

ORPO_GOLDEN = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "orpo"
TOKENIZED = hf.repo_root() / "data-pipeline" / "src" / "test" / "resources" / "golden" / "preference" \
    / "trl-orpo-tokenized.json"
SFT_CASE = "mixtral"
PAD = hf.EOS_ID
SAMPLE_PAIRS = 24  # of data/samples/preferences.jsonl, in the tokenization golden
LOGGED_LOGITS = ("logits/chosen", "logits/rejected")


class _OneProcess:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x


def _bare(trainer_class, **fields):
    """A trainer instance holding only what get_batch_loss_metrics reads."""
    trainer = trainer_class.__new__(trainer_class)
    vars(trainer).update(accelerator=_OneProcess(), aux_loss_enabled=False, **fields)
    return trainer


def fixed_case(method: str, fields: dict, chosen, rejected, nll) -> dict:
    """TRL's get_batch_loss_metrics on fixed log-probs: loss, its gradient and the metrics it logs."""
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    trainer = _bare(ORPOTrainer if method == "orpo" else CPOTrainer, **fields)
    chosen = chosen.clone().requires_grad_(True)
    rejected = rejected.clone().requires_grad_(True)
    nll = nll.clone().requires_grad_(True)
    logits = torch.zeros(len(chosen), 2, 3, dtype=torch.float64)  # logits/* are not compared here
    trainer.concatenated_forward = lambda model, batch: (chosen, rejected, logits, logits, nll)
    loss, metrics = trainer.get_batch_loss_metrics(None, {}, "train")
    loss.backward()
    return {"method": method, **fields, "chosen": chosen.tolist(), "rejected": rejected.tolist(),
            "nll": float(nll.detach()), "loss": float(loss.detach()), "grad_chosen": chosen.grad.tolist(),
            "grad_rejected": rejected.grad.tolist(), "grad_nll": float(nll.grad),
            "metrics": {k: v for k, v in metrics.items() if k not in LOGGED_LOGITS}}


def fixed_logps_cases() -> dict:
    d = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    # Averaged per token (ORPO, ipo, simpo): in (-inf, 0), some above -ln 2, where log1mexp takes its other branch.
    mean_chosen = d(-1.42, -0.31, -2.25, -0.71, -0.05, -1.83)
    mean_rejected = d(-1.50, -0.91, -2.17, -0.69, -0.62, -1.20)
    # Summed (sigmoid, hinge): sequence log-probs.
    sum_chosen = d(-14.2, -9.6, -22.5, -7.1, -11.0, -18.3)
    sum_rejected = d(-15.0, -9.1, -21.7, -7.9, -12.4, -18.0)
    nll = d(1.37)
    cpo = lambda loss, beta=0.1, smoothing=0.0, alpha=1.0, gamma=0.5: dict(  # noqa: E731
        loss_type=loss, beta=beta, label_smoothing=smoothing, cpo_alpha=alpha, simpo_gamma=gamma, alpha=0.0)
    cases = {
        "orpo": ("orpo", dict(beta=0.1), mean_chosen, mean_rejected),
        "orpo_beta_0.5": ("orpo", dict(beta=0.5), mean_chosen, mean_rejected),
        "cpo_sigmoid": ("cpo", cpo("sigmoid"), sum_chosen, sum_rejected),
        "cpo_sigmoid_smoothing_beta_0.3_alpha_0.5": ("cpo", cpo("sigmoid", 0.3, 0.1, 0.5), sum_chosen, sum_rejected),
        "cpo_hinge": ("cpo", cpo("hinge", 0.2), sum_chosen, sum_rejected),
        "cpo_ipo": ("cpo", cpo("ipo", 0.1, alpha=0.0), mean_chosen, mean_rejected),
        "simpo": ("cpo", cpo("simpo", 2.0, alpha=0.0, gamma=0.5), mean_chosen, mean_rejected),
        "simpo_smoothing_alpha_1_gamma_1.2": ("cpo", cpo("simpo", 2.5, 0.15, 1.0, 1.2), mean_chosen, mean_rejected),
    }
    return {name: fixed_case(method, fields, c, r, nll) for name, (method, fields, c, r) in cases.items()}


# ---- one step of TRL's trainers on the tiny Mixtral ------------------------------------------------------------------

STEPS = {  # golden name -> method, config fields
    "orpo": ("orpo", dict(beta=0.1)),
    "cpo_sigmoid": ("cpo", dict(loss_type="sigmoid", beta=0.1, cpo_alpha=1.0)),
    "simpo": ("cpo", dict(loss_type="simpo", beta=2.0, cpo_alpha=0.0, simpo_gamma=0.5)),
}


def mistral_tokenizer():
    tok = tokenizer(MISTRAL)
    tok.pad_token = tok.eos_token  # as mixtune pads: with EOS
    return tok


def trl_trainer(method: str, fields: dict, model, tok, work: Path):
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    config, trainer_class = (ORPOConfig, ORPOTrainer) if method == "orpo" else (CPOConfig, CPOTrainer)
    args = config(output_dir=str(work), per_device_train_batch_size=3, report_to=[], use_cpu=True,
                  max_length=4096, dataloader_num_workers=0, bf16=False, gradient_checkpointing=False, **fields)
    dataset = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tok)


def tokenized_row(pair: dict) -> dict:
    """What tokenize_row returns for a pair already in ids (BOS first, each answer ending with EOS)."""
    row = {"prompt_input_ids": pair["prompt_ids"], "prompt_attention_mask": [1] * len(pair["prompt_ids"])}
    for side in ("chosen", "rejected"):
        ids = pair["prompt_ids"] + pair[side + "_ids"]
        row[side + "_input_ids"] = ids
        row[side + "_attention_mask"] = [1] * len(ids)
        row[side + "_labels"] = [-100] * len(pair["prompt_ids"]) + pair[side + "_ids"]
    return row


def trl_step(name: str, pairs: list, work: Path) -> tuple[dict, dict, dict]:
    method, fields = STEPS[name]
    trainable = sft.Trainable(sft.CASES[SFT_CASE], sft.SFT_GOLDEN / SFT_CASE)
    trainer = trl_trainer(method, fields, trainable.model, mistral_tokenizer(), work)
    trainable.model.train()
    batch = trainer.data_collator([tokenized_row(p) for p in pairs])
    trainable.model.zero_grad(set_to_none=True)
    loss, metrics = trainer.get_batch_loss_metrics(trainable.model, batch, "train")
    loss.backward()
    grads = trainable.adapter_tensors(of=lambda w: w.grad)
    zero = [k for k, g in grads.items() if not torch.any(g)]
    assert not zero, f"{name}: LoRA weights without gradient: {zero}"
    concatenated = trainer.concatenated_inputs(batch, padding_value=PAD)
    with torch.no_grad():  # the router term TRL adds (coefficient x aux_loss) but does not log
        aux = trainable.model(concatenated["concatenated_input_ids"],
                              attention_mask=concatenated["concatenated_attention_mask"], output_router_logits=True,
                              use_cache=False).aux_loss
    record = {"method": method, **fields, "loss": float(loss.detach()), "aux_loss": float(aux),
              "aux_coef": trainable.config.router_aux_loss_coef,
              "metrics": {k: v for k, v in metrics.items() if k not in LOGGED_LOGITS},
              "grads": f"grads_{name}.safetensors"}
    return record, grads, {k: v.tolist() for k, v in batch.items() if isinstance(v, torch.Tensor)}


# ---- tokenization of pairs as ORPOTrainer maps its dataset -----------------------------------------------------------

STANDARD = [
    {"prompt": "Human: Say hi.\n\nAssistant:", "chosen": " Hi there!", "rejected": " Go away."},
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    {"prompt": "The answer is", "chosen": "n't known.", "rejected": " 42."},  # the prompt's last token merges
]


def trl_tokenized(records: list, work: Path) -> list:
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    tok = mistral_tokenizer()
    trainer = types.SimpleNamespace(processing_class=tok, is_encoder_decoder=False, max_length=4096)
    from trl.experimental.orpo import ORPOTrainer

    trainer.build_tokenized_answer = types.MethodType(ORPOTrainer.build_tokenized_answer, trainer)
    out = []
    for record in records:
        row = maybe_apply_chat_template(maybe_extract_prompt(record), tok)
        tokens = ORPOTrainer.tokenize_row(trainer, {**record, **row})
        out.append({"record": record, "prompt_ids": tokens["prompt_input_ids"],
                    "chosen_input_ids": tokens["chosen_input_ids"], "chosen_labels": tokens["chosen_labels"],
                    "rejected_input_ids": tokens["rejected_input_ids"], "rejected_labels": tokens["rejected_labels"]})
    return out


def tokenized_cases(work: Path) -> dict:
    lines = (hf.repo_root() / "data" / "samples" / "preferences.jsonl").read_text().splitlines()
    samples = [json.loads(line) for line in lines[:SAMPLE_PAIRS]]
    return {"template": "mistral", "eos_id": hf.EOS_ID, "conversational": trl_tokenized(samples, work),
            "standard": trl_tokenized(STANDARD, work)}


def write_goldens(out: Path = ORPO_GOLDEN, tokenized_out: Path = TOKENIZED) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    try:
        if out.exists():
            shutil.rmtree(out)
        (out / "step").mkdir(parents=True)
        mg.write_json(out / "losses.json", fixed_logps_cases())
        pairs = make_pairs(hf.TINY["vocab_size"])
        steps, collated = {}, None
        with tempfile.TemporaryDirectory() as work:
            mg.write_json(tokenized_out, tokenized_cases(Path(work)))
            for name in STEPS:
                record, grads, batch = trl_step(name, pairs, Path(work))
                save_file(grads, out / "step" / record["grads"], metadata={"format": "pt"})
                steps[name] = record
                collated = collated or batch
                print(f"{name} step: loss {record['loss']:.6f}, nll {record['metrics']['nll_loss']:.6f}")
        mg.write_json(out / "step" / "batch.json", {
            "model": f"../../sft/{SFT_CASE}/model", "adapter": f"../../sft/{SFT_CASE}/adapter", "pad_id": PAD,
            "pairs": pairs, "collated": collated})
        mg.write_json(out / "step" / "expected.json", steps)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    if argv:
        raise SystemExit("make_orpo_goldens.py takes no arguments")
    write_goldens()


if __name__ == "__main__":
    main(sys.argv[1:])
