"""Distillation goldens (see interop/GOLDENS.md, "Distillation"), all from TRL 1.13's own DistillationTrainer code:

- trainer/src/test/resources/golden/distill/losses.json: fixed student and teacher logits through
  trl.trainer.distillation_trainer._chunked_divergence_loss itself (the generalized JSD the trainer reduces; the logits
  enter as hidden states through an identity lm_head, so the function computes on exactly these logits), for beta 0
  (forward KL), 0.5, 1 (reverse KL) and 0.3 at temperatures 1, 2 and 0.7, masked to completion tokens, reduced over
  the micro-batch's own tokens (num_items_in_batch None) or over a larger step count: the loss, d loss / d student
  logits and the student entropy sum TRL logs. Each is checked here against trl.experimental.gkd's
  generalized_jsd_loss on the same logits (the same divergence, another reduction code).
- trainer/src/test/resources/golden/distill/step/: one forward/backward of DistillationTrainer._compute_loss (the
  trainer's loss on a batch of fixed completions, what an off-policy micro-batch is) with the tiny Mistral of the SFT
  golden as the student (its checkpoint and random PEFT adapter, trainable) and the tiny Mixtral of the SFT golden with
  its adapter as the teacher: loss, the entropy TRL logs and every student LoRA gradient, per (beta, temperature).

Run: interop/.venv/bin/python interop/make_distill_goldens.py
Deterministic: fixed seeds, float32, one torch thread.
"""

from __future__ import annotations

import inspect
import shutil
import sys
import types
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

import hf_models as hf
import make_goldens as mg
import make_sft_goldens as sft

DISTILL_GOLDEN = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "distill"

# ---- (a) the loss on fixed logits -----------------------------------------------------------------------------------

LOGITS_SEED = 7301
ROWS, WIDTH, VOCAB = 3, 5, 11
# completion mask per row: row 0 full, row 1 ends early (right padding), row 2 has one token
MASK = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
LOSS_CASES = {  # name -> beta, temperature, num_items_in_batch (None: the micro-batch's own tokens)
    "forward_kl": (0.0, 1.0, None),
    "forward_kl_t2": (0.0, 2.0, None),
    "jsd_t2": (0.5, 2.0, None),
    "jsd_t0.7_step_tokens": (0.5, 0.7, 20),
    "reverse_kl": (1.0, 1.0, None),
    "reverse_kl_t2": (1.0, 2.0, None),
    "beta_0.3_t2_step_tokens": (0.3, 2.0, 17),
}


def fixed_logits() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(LOGITS_SEED)
    student = torch.randn(ROWS, WIDTH, VOCAB, generator=gen) * 2.0
    teacher = torch.randn(ROWS, WIDTH, VOCAB, generator=gen) * 3.0
    return student, teacher


def trl_loss(student, teacher, mask, beta, temperature, num_items):
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    student = student.clone().requires_grad_(True)
    eye = torch.eye(VOCAB)
    # chunk size 4: several chunks and a partly masked tail, as the trainer's 256 has on long completions
    loss, entropy_sum, n_valid = _chunked_divergence_loss(student, teacher, eye, eye, mask, beta, 4,
                                                          num_items_in_batch=num_items, temperature=temperature)
    loss.backward()
    return loss, student.grad, float(entropy_sum.detach()), int(n_valid)


def gkd_loss(student, teacher, mask, beta, temperature, num_items):
    from trl.experimental.gkd import GKDTrainer

    labels = torch.where(mask.bool(), torch.zeros_like(mask), torch.full_like(mask, -100))
    return GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta, temperature=temperature,
                                           num_items_in_batch=num_items)


def loss_cases() -> dict:
    student, teacher = fixed_logits()
    mask = torch.tensor(MASK)
    out = {"student_logits": student.tolist(), "teacher_logits": teacher.tolist(), "completion_mask": MASK,
           "cases": {}}
    for name, (beta, temperature, num_items) in LOSS_CASES.items():
        loss, grad, entropy_sum, n_valid = trl_loss(student, teacher, mask, beta, temperature, num_items)
        gkd = gkd_loss(student, teacher, mask, beta, temperature, num_items)
        assert torch.allclose(loss, gkd, rtol=1e-6, atol=1e-7), (name, float(loss), float(gkd))
        out["cases"][name] = {"beta": beta, "temperature": temperature, "num_items_in_batch": num_items,
                              "loss": float(loss.detach()), "grad": grad.tolist(), "entropy_sum": entropy_sum,
                              "valid_tokens": n_valid}
    return out


# ---- (b) one step of DistillationTrainer._compute_loss on the tiny models --------------------------------------------

STUDENT_CASE, TEACHER_CASE = "mistral", "mixtral"
TOKEN_SEED = 7302
PROMPT_LENGTH = 5  # every prompt this long: TRL left-pads prompts, and equal lengths leave no padding there
COMPLETIONS = [6, 3, 4]  # completion lengths, right-padded as TRL pads them; each ends with EOS
STEPS = {  # golden name -> beta, temperature
    "forward_kl": (0.0, 1.0),
    "jsd_t2": (0.5, 2.0),
    "reverse_kl_t0.7": (1.0, 0.7),
}


def make_examples(vocab: int) -> list[dict]:
    gen = torch.Generator().manual_seed(TOKEN_SEED)
    draw = lambda n: torch.randint(3, vocab, (n,), generator=gen).tolist()  # noqa: E731  (no BOS/EOS/pad ids)
    return [{"prompt_ids": [1] + draw(PROMPT_LENGTH - 1), "completion_ids": draw(c - 1) + [hf.EOS_ID]}
            for c in COMPLETIONS]


def collate(examples: list[dict]) -> dict:
    width = max(len(e["completion_ids"]) for e in examples)
    pad = lambda ids: ids + [hf.EOS_ID] * (width - len(ids))  # noqa: E731  (TRL's pad token: EOS)
    return {
        "prompt_ids": torch.tensor([e["prompt_ids"] for e in examples]),
        "prompt_mask": torch.ones(len(examples), PROMPT_LENGTH, dtype=torch.long),
        "completion_ids": torch.tensor([pad(e["completion_ids"]) for e in examples]),
        "completion_mask": torch.tensor([[1] * len(e["completion_ids"]) + [0] * (width - len(e["completion_ids"]))
                                         for e in examples]),
    }


class _OneProcess:
    is_main_process = True

    @staticmethod
    def unwrap_model(model):
        return model


def trl_step(name: str, examples: list) -> tuple[dict, dict]:
    from trl import DistillationTrainer

    beta, temperature = STEPS[name]
    student = sft.Trainable(sft.CASES[STUDENT_CASE], sft.SFT_GOLDEN / STUDENT_CASE)
    teacher_base = hf.load_reference(sft.SFT_GOLDEN / TEACHER_CASE / "model")
    teacher = hf.load_peft(teacher_base, sft.SFT_GOLDEN / TEACHER_CASE / "adapter")
    trainer = DistillationTrainer.__new__(DistillationTrainer)
    base_forward = student.model.get_base_model().forward
    vars(trainer).update(model_kwarg_keys=inspect.signature(base_forward).parameters.keys(), _is_vlm=False,
                         teacher_model=teacher, accelerator=_OneProcess(), beta=beta, temperature=temperature,
                         _forward_redirection=lambda wrapper, module, fn, *args, **kwargs: fn(*args, **kwargs))
    student.model.zero_grad(set_to_none=True)
    inputs = collate(examples)
    loss, entropy_sum, n_valid = trainer._compute_loss(student.model, inputs, None)
    loss.backward()
    grads = student.adapter_tensors(of=lambda w: w.grad)
    zero = [k for k, g in grads.items() if not torch.any(g)]
    assert not zero, f"{name}: LoRA weights without gradient: {zero}"
    record = {"beta": beta, "temperature": temperature, "loss": float(loss.detach()),
              "entropy": float(entropy_sum) / int(n_valid), "completion_tokens": int(n_valid),
              "grads": f"grads_{name}.safetensors"}
    return record, grads


def write_goldens(out: Path = DISTILL_GOLDEN) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if out.exists():
            shutil.rmtree(out)
        (out / "step").mkdir(parents=True)
        mg.write_json(out / "losses.json", loss_cases())
        examples = make_examples(hf.TINY["vocab_size"])
        steps = {}
        for name in STEPS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                record, grads = trl_step(name, examples)
            save_file(grads, out / "step" / record["grads"], metadata={"format": "pt"})
            steps[name] = record
            print(f"distill step {name}: loss {record['loss']:.6f}, entropy {record['entropy']:.6f}")
        mg.write_json(out / "step" / "batch.json", {
            "student": {"model": f"../../sft/{STUDENT_CASE}/model", "adapter": f"../../sft/{STUDENT_CASE}/adapter"},
            "teacher": {"model": f"../../sft/{TEACHER_CASE}/model", "adapter": f"../../sft/{TEACHER_CASE}/adapter"},
            "pad_id": hf.EOS_ID, "examples": examples})
        mg.write_json(out / "step" / "expected.json", steps)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    if argv:
        raise SystemExit("make_distill_goldens.py takes no arguments")
    write_goldens()


if __name__ == "__main__":
    main(sys.argv[1:])
