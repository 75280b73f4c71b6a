"""KTO goldens (see interop/GOLDENS.md, "KTO"), all from TRL 1.13's own KTOTrainer code:

- data-pipeline/src/test/resources/golden/preference/trl-kto-tokenized.json: KTOTrainer._prepare_dataset on unpaired
  records (standard strings with the EOS TRL appends as text, conversational message lists through the chat template)
  and on a paired file (unpaired by TRL's unpair_preference_dataset: per map batch of 1000 rows, all chosen, then all
  rejected), with max_length MAX_LENGTH (examples whose prompt alone reaches it dropped) and the KL completions rotated
  by +1 within each per_device_train_batch_size block; and the desirable/undesirable weight warning TRL logs.
- trainer/src/test/resources/golden/kto/losses.json: fixed sequence log-probs (policy and reference, of the matched
  and of the mismatched KL rows) through KTOTrainer._compute_loss itself on a stand-in model whose completion
  log-probs are the fixed ones (reference log-probs precomputed, TRL's precompute_ref_log_probs path): the loss,
  d loss / d policy log-probs and TRL's logged kl, rewards/* and logps/*, per loss type and weights, in float64.
- trainer/src/test/resources/golden/kto/step/: one forward/backward of KTOTrainer._compute_loss on the tiny Mixtral of
  the SFT golden (its checkpoint and random PEFT adapter), the reference being the model with its adapter off: loss,
  TRL's metrics (entropy and logits/* too) and every LoRA gradient.

Run: interop/.venv/bin/python interop/make_kto_goldens.py
Deterministic: fixed seeds, float32 (float64 for losses.json), one torch thread.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import types
import warnings
from collections import defaultdict
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from datasets import Dataset
from safetensors.torch import save_file

import hf_models as hf
import make_goldens as mg
import make_sft_goldens as sft
from make_preference_goldens import MISTRAL, chat, tokenizer
from make_template_goldens import CHATML

KTO_GOLDEN = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "kto"
TOKENIZED = hf.repo_root() / "data-pipeline" / "src" / "test" / "resources" / "golden" / "preference" \
    / "trl-kto-tokenized.json"
SFT_CASE = "mixtral"
PAD = hf.EOS_ID
MAX_LENGTH = 48
BATCH = 3  # per_device_train_batch_size: the KL rotation's block

# ---- (a) data: unpaired and paired files as KTOTrainer._prepare_dataset tokenizes them --------------------------------

LONG = ("Please read this carefully: the quick brown fox jumps over the lazy dog near the river bank today. "
        "Which animal jumps?")

UNPAIRED = {  # file name -> records, in file order
    "standard": [
        {"prompt": "Human: Say hi.\n\nAssistant:", "completion": " Hi there!", "label": True},
        {"prompt": "The answer is", "completion": "n't known.", "label": False},
        {"prompt": "Tell me a story.", "completion": " Once upon a time " + "there was a fox " * 8, "label": True},
        {"prompt": "Count:", "completion": " one two three</s>", "label": True},  # EOS already there: not added
        {"prompt": LONG + " " + LONG + " " + LONG, "completion": " The fox.", "label": False},  # prompt fills max
    ],
    "conversational": [
        {"prompt": [{"role": "user", "content": "What is the capital of France?"}],
         "completion": [{"role": "assistant", "content": "Paris is the capital of France."}], "label": True},
        {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Go."}],
         "label": False},
        {"prompt": chat("Capital of France?", "Paris.") + [{"role": "user", "content": "And of Italy?"}],
         "completion": [{"role": "assistant", "content": "Milan, surely."}], "label": False},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": LONG}],
         "completion": [{"role": "assistant", "content": "The quick brown fox is the animal that jumps over it."}],
         "label": True},
    ],
    "paired": [
        {"prompt": "Human: Say hi.\n\nAssistant:", "chosen": " Hi there!", "rejected": " Go away."},
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"chosen": chat("Hi", "Hello!"), "rejected": chat("Hi", "Go.")},  # whole conversations: TRL extracts the prompt
        {"chosen": chat("Name a prime.", "Seven."), "rejected": chat("Name a prime.", "Nine.")},
    ],
}
TEMPLATES = {"mistral": MISTRAL, "chatml": CHATML}
WEIGHTS = [(1.0, 1.0), (1.0, 0.5), (1.5, 1.0)]  # (desirable, undesirable): the warning's cases


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def kto_prepare(records: list, tok, work: str, desirable=1.0, undesirable=1.0) -> tuple[list, list]:
    """KTOTrainer._prepare_dataset on an instance holding what it reads; the examples and the warnings it logged."""
    from trl import KTOConfig, KTOTrainer

    args = KTOConfig(output_dir=work, max_length=MAX_LENGTH, per_device_train_batch_size=BATCH, report_to=[],
                     use_cpu=True, desirable_weight=desirable, undesirable_weight=undesirable)
    trainer = types.SimpleNamespace(_tokenizer=tok, calculate_KL=True, desirable_weight=desirable,
                                    undesirable_weight=undesirable)
    handler = _Warnings()
    logger = logging.getLogger("trl.trainer.kto_trainer")
    logger.addHandler(handler)
    try:
        dataset = KTOTrainer._prepare_dataset(trainer, Dataset.from_list(records), tok, args, "train")
    finally:
        logger.removeHandler(handler)
    keys = ("prompt_ids", "completion_ids", "KL_completion_ids", "label")
    return [{k: example[k] for k in keys} for example in dataset], handler.messages


def tokenized_cases(work: str) -> dict:
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    cases = []
    for template, jinja in TEMPLATES.items():
        tok = tokenizer(jinja)
        for name, records in UNPAIRED.items():
            if name == "standard" and template != "mistral":
                continue  # raw text: no template
            if name == "paired":  # TRL's unpairing needs one prompt type per file: the string and the message pairs
                files = {"paired_standard": records[:2], "paired_conversational": records[2:]}
            else:
                files = {name: records}
            for file, rows in files.items():
                if file == "paired_standard" and template != "mistral":
                    continue
                examples, _ = kto_prepare(rows, tok, work)
                collated = DataCollatorForUnpairedPreference(pad_token_id=PAD, max_length=MAX_LENGTH)(examples)
                cases.append({"name": file, "template": template, "records": rows, "examples": examples,
                              "collated": {k: v.tolist() for k, v in collated.items()}})
    # The desirable/undesirable warning: 3 desirable and 2 undesirable examples (before the max_length filter drops
    # one undesirable: TRL counts after it, 3 and 1).
    warns = []
    tok = tokenizer(MISTRAL)
    for desirable, undesirable in WEIGHTS:
        _, messages = kto_prepare(UNPAIRED["standard"], tok, work, desirable, undesirable)
        warns.append({"desirable_weight": desirable, "undesirable_weight": undesirable,
                      "warnings": [m for m in messages if "desirable" in m]})
    return {"max_length": MAX_LENGTH, "batch_size": BATCH, "pad_id": PAD, "eos_id": hf.EOS_ID, "cases": cases,
            "weight_warnings": warns}


# ---- (b) the loss on fixed log-probs --------------------------------------------------------------------------------


class _Outputs:
    def __init__(self, logits):
        self.logits = logits


class _LogitsOfLogProbs(torch.nn.Module):
    """A "model" over a two-token vocabulary whose logits give every completion token of a row the log-probability
    logps[r] / length (token 0, the label everywhere): l = q - log(1 - e^q) makes log_softmax([l, 0])[0] = q. A row
    starting with token 1 is a KL row and reads kl_logps. TRL's summed completion log-probs are then the fixed ones."""

    def __init__(self, logps, kl_logps, length):
        super().__init__()
        self.logps, self.kl_logps, self.length = logps, kl_logps, length

    def forward(self, input_ids, attention_mask, **kwargs):
        logps = self.kl_logps if int(input_ids[0, 0]) == 1 else self.logps
        q = logps / self.length
        token0 = q - torch.log(-torch.expm1(q))
        width = input_ids.shape[1]
        logits = torch.zeros(len(q), width, 2, dtype=logps.dtype)
        positions = (torch.arange(width) < self.length)[None, :, None]
        return _Outputs(logits + positions * F.pad(token0[:, None, None], (0, 1)))


class _OneProcess:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x


LOGGED = ("kl", "rewards/chosen", "logps/chosen", "rewards/rejected", "logps/rejected", "rewards/margins")


def trl_compute_loss(loss_type, beta, desirable, undesirable, policy, reference, policy_kl, reference_kl, labels):
    from trl import KTOTrainer

    trainer = KTOTrainer.__new__(KTOTrainer)
    length = 4
    policy = policy.clone().requires_grad_(True)
    model = _LogitsOfLogProbs(policy, policy_kl, length)
    model.train()
    calculate_kl = loss_type != "apo_zero_unpaired"
    vars(trainer).update(model=model, accelerator=_OneProcess(), aux_loss_enabled=False, use_liger_kernel=False,
                         precompute_ref_logps=True, calculate_KL=calculate_kl, loss_type=loss_type, beta=beta,
                         desirable_weight=desirable, undesirable_weight=undesirable,
                         _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0,
                         _tp_size=1)
    rows, width = len(labels), length + 1
    completion = (torch.arange(width)[None, :] >= 1).expand(rows, width).long()
    inputs = {"input_ids": torch.zeros(rows, width, dtype=torch.long),
              "attention_mask": torch.ones(rows, width, dtype=torch.long), "completion_mask": completion,
              "label": torch.tensor(labels), "ref_logps": reference}
    if calculate_kl:
        kl_ids = torch.zeros(rows, width, dtype=torch.long)
        kl_ids[:, 0] = 1  # the stand-in's mark of a KL row (position 0 is never a target)
        inputs.update(KL_input_ids=kl_ids,
                      KL_attention_mask=torch.ones(rows, width, dtype=torch.long), KL_completion_mask=completion,
                      ref_KL_logps=reference_kl)
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    loss.backward()
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if k in LOGGED}
    return float(loss.detach()), policy.grad.tolist(), logged


def fixed_logps_cases() -> dict:
    d = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    policy = d(-14.2, -9.6, -22.5, -7.1, -11.0, -18.3)
    reference = d(-15.0, -9.1, -21.7, -7.9, -12.4, -18.0)
    policy_kl = d(-16.5, -12.2, -20.1, -9.4, -13.3, -17.7)
    reference_kl = d(-17.9, -12.0, -21.6, -9.0, -14.1, -18.8)  # policy above: a positive KL estimate
    below_kl = reference_kl + 3.0  # policy below the reference on the mismatched rows: the estimate clamps at 0
    mixed = [True, False, False, True, True, False]
    cases = {
        "kto": ("kto", 0.1, 1.0, 1.0, policy_kl, reference_kl, mixed),
        "kto_kl_clamped": ("kto", 0.1, 1.0, 1.0, policy_kl, below_kl, mixed),
        "kto_beta_0.5_weights": ("kto", 0.5, 1.33, 0.7, policy_kl, reference_kl, mixed),
        "kto_all_desirable": ("kto", 0.1, 1.0, 1.0, policy_kl, reference_kl, [True] * 6),
        "kto_all_undesirable": ("kto", 0.1, 1.0, 2.0, policy_kl, reference_kl, [False] * 6),
        "apo_zero_unpaired": ("apo_zero_unpaired", 0.1, 1.0, 1.0, None, None, mixed),
        "apo_zero_unpaired_beta_0.3_weights": ("apo_zero_unpaired", 0.3, 0.8, 1.2, None, None, mixed),
    }
    out = {}
    for name, (loss_type, beta, desirable, undesirable, pkl, rkl, labels) in cases.items():
        loss, grad, logged = trl_compute_loss(loss_type, beta, desirable, undesirable, policy, reference, pkl, rkl,
                                              labels)
        out[name] = {"loss_type": loss_type, "beta": beta, "desirable_weight": desirable,
                     "undesirable_weight": undesirable, "labels": labels, "policy": policy.tolist(),
                     "reference": reference.tolist(), "policy_kl": None if pkl is None else pkl.tolist(),
                     "reference_kl": None if rkl is None else rkl.tolist(), "loss": loss, "grad": grad,
                     "metrics": logged}
    return out


# ---- (c) one step of TRL's KTOTrainer on the tiny Mixtral ------------------------------------------------------------

# (prompt length, completion length, label) per example; completions end with EOS. One micro-batch of four: the KL
# rows pair each prompt with the completion before it (the last one's for the first).
EXAMPLES = [(6, 5, True), (3, 7, False), (9, 2, False), (4, 6, True)]
TOKEN_SEED = 6302
BETA = 0.1
STEPS = {  # golden name -> loss_type, desirable_weight, undesirable_weight
    "kto": ("kto", 1.0, 1.0),
    "kto_weights": ("kto", 1.33, 0.75),
    "apo_zero_unpaired": ("apo_zero_unpaired", 1.0, 1.0),
}


def make_examples(vocab: int) -> list[dict]:
    gen = torch.Generator().manual_seed(TOKEN_SEED)
    draw = lambda n: torch.randint(3, vocab, (n,), generator=gen).tolist()  # noqa: E731  (no BOS/EOS/pad ids)
    examples = [{"prompt_ids": [1] + draw(p - 1), "completion_ids": draw(c - 1) + [hf.EOS_ID], "label": label}
                for p, c, label in EXAMPLES]
    completions = [e["completion_ids"] for e in examples]
    for example, kl in zip(examples, [completions[-1]] + completions[:-1]):  # TRL's add_kl_completion_ids
        example["KL_completion_ids"] = kl
    return examples


def trl_step(name: str, case_dir: Path, examples: list, work: Path) -> tuple[dict, dict, dict]:
    from transformers import PreTrainedTokenizerFast
    from trl import KTOConfig, KTOTrainer

    loss_type, desirable, undesirable = STEPS[name]
    tok = PreTrainedTokenizerFast(tokenizer_file=str(hf.repo_root() / "configs/tokenizer/mistral-v1/tokenizer.json"),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    trainable = sft.Trainable(sft.CASES[SFT_CASE], case_dir)
    args = KTOConfig(output_dir=str(work), beta=BETA, loss_type=loss_type, desirable_weight=desirable,
                     undesirable_weight=undesirable, per_device_train_batch_size=len(examples), report_to=[],
                     use_cpu=True, max_length=None, precompute_ref_log_probs=False, dataloader_num_workers=0,
                     router_aux_loss_coef=trainable.config.router_aux_loss_coef)
    dataset = Dataset.from_list([{"prompt": "a", "completion": " b", "label": True},
                                 {"prompt": "a", "completion": " c", "label": False}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = KTOTrainer(model=trainable.model, args=args, train_dataset=dataset, processing_class=tok)
    if "ref" in trainable.model.peft_config:
        trainable.model.delete_adapter("ref")
    trainable.model.set_adapter("default")
    trainable.model.train()
    rows = [dict(e) for e in examples]
    if loss_type == "apo_zero_unpaired":
        for row in rows:
            del row["KL_completion_ids"]
    batch = trainer.data_collator(rows)
    trainable.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainable.model, batch, return_outputs=False)
    loss.backward()
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
    grads = trainable.adapter_tensors(of=lambda w: w.grad)
    zero = [k for k, g in grads.items() if not torch.any(g)]
    assert not zero, f"{name}: LoRA weights without gradient: {zero}"
    record = {"loss_type": loss_type, "beta": BETA, "desirable_weight": desirable, "undesirable_weight": undesirable,
              "loss": float(loss.detach()), "aux_coef": trainable.config.router_aux_loss_coef, "metrics": logged,
              "grads": f"grads_{name}.safetensors"}
    return record, grads, {k: v.tolist() for k, v in batch.items()}


def write_goldens(kto_out: Path = KTO_GOLDEN, tokenized_out: Path = TOKENIZED) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory() as work:
            tokenized_out.parent.mkdir(parents=True, exist_ok=True)
            mg.write_json(tokenized_out, tokenized_cases(work))
            if kto_out.exists():
                shutil.rmtree(kto_out)
            (kto_out / "step").mkdir(parents=True)
            mg.write_json(kto_out / "losses.json", fixed_logps_cases())
            examples = make_examples(hf.TINY["vocab_size"])
            steps, collated = {}, None
            for name in STEPS:
                record, grads, batch = trl_step(name, sft.SFT_GOLDEN / SFT_CASE, examples, Path(work))
                save_file(grads, kto_out / "step" / record["grads"], metadata={"format": "pt"})
                steps[name] = record
                collated = collated or batch
                print(f"kto step {name}: loss {record['loss']:.6f}, kl {record['metrics'].get('kl', 0):.6f}")
            mg.write_json(kto_out / "step" / "batch.json", {
                "model": f"../../sft/{SFT_CASE}/model", "adapter": f"../../sft/{SFT_CASE}/adapter", "pad_id": PAD,
                "examples": examples, "collated": collated})
            mg.write_json(kto_out / "step" / "expected.json", steps)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    if argv:
        raise SystemExit("make_kto_goldens.py takes no arguments")
    write_goldens()


if __name__ == "__main__":
    main(sys.argv[1:])
