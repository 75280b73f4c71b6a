"""Golden for mixtune's learning-rate schedules: trainer/src/test/resources/golden/schedule/schedules.json.

Run: interop/.venv/bin/python interop/make_schedule_goldens.py [out.json]

Per case, the learning rate transformers 5.18's Trainer gives each optimizer step: `get_scheduler(name, ...)` on a
torch optimizer, with the warmup `TrainingArguments.get_warmup_steps(total)` makes of `warmup_steps` (a count, or a
fraction of the steps below 1: math.ceil(total x fraction)), read before each step as `Trainer` logs it and
`scheduler.step()` after. `lrs` has `total` values, step 0 first; cosine_with_min_lr's `min_lr_rate` is mixtune's
`min_lr_ratio`. A case with `lr_scheduler_kwargs` (the later ones: cosine's num_cycles, cosine_with_restarts,
polynomial, inverse_sqrt, cosine_warmup_with_min_lr, warmup_stable_decay) keeps them as transformers takes them in
`hf_kwargs` and as mixtune's train keys in `kwargs` (the same names, but min_lr_rate is min_lr_ratio and min_lr is
min_lr_ratio = min_lr / lr, as transformers divides). The Java test (LearningRateScheduleGoldenTest) runs
mixtune's schedule of the same name with the same warmup and compares every value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments, get_scheduler

import hf_models as hf

OUT = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "schedule" / "schedules.json"

# (transformers' lr_scheduler_type, mixtune's train.schedule, lr, warmup_steps as TrainingArguments takes it, total[,
# min_lr_rate: cosine_with_min_lr's lr_scheduler_kwargs, mixtune's train.min_lr_ratio | lr_scheduler_kwargs as a dict])
CASES = [
    ("cosine", "cosine", 3.0e-3, 5, 88),  # the quickstart's
    ("linear", "linear", 2.0e-4, 10, 37),
    ("constant_with_warmup", "constant", 1.0e-4, 7, 20),
    ("constant", "constant", 1.0e-4, 0, 12),
    ("cosine", "cosine", 2.0e-4, 0.1, 37),  # warmup ceil(3.7) = 4
    ("cosine", "cosine", 2.0e-5, 0.07, 100),  # 0.07 x 100 is 7.000000000000001 in floating point: ceil makes 8
    ("linear", "linear", 5.0e-5, 0.03, 250),  # ceil(7.5) = 8
    ("linear", "linear", 1.0e-3, 3, 3),  # warmup as long as the run
    ("cosine_with_min_lr", "cosine", 2.0e-4, 0.1, 37, 0.1),
    ("cosine_with_min_lr", "cosine", 3.0e-3, 5, 20, 0.25),
    ("cosine", "cosine", 2.0e-4, 3, 30, {"num_cycles": 1.5}),
    ("cosine_with_min_lr", "cosine", 1.0e-3, 4, 25, {"min_lr_rate": 0.1, "num_cycles": 0.75}),
    ("cosine_with_min_lr", "cosine", 2.0e-4, 3, 20, {"min_lr": 1.0e-5}),
    ("cosine_with_restarts", "cosine_with_restarts", 1.0e-4, 0.1, 33, {}),  # num_cycles 1: the plain cosine
    ("cosine_with_restarts", "cosine_with_restarts", 3.0e-4, 5, 40, {"num_cycles": 3}),
    ("cosine_with_restarts", "cosine_with_restarts", 2.0e-4, 2, 29, {"num_cycles": 2.5}),
    ("polynomial", "polynomial", 2.0e-4, 4, 30, {}),  # lr_end 1e-7, power 1
    ("polynomial", "polynomial", 3.0e-3, 5, 41, {"power": 2.0, "lr_end": 1.0e-5}),
    ("polynomial", "polynomial", 1.0e-3, 0, 23, {"power": 0.5, "lr_end": 0.0}),
    ("polynomial", "polynomial", 5.0e-4, 2, 19, {"power": 3.0, "lr_end": 1.0e-6}),
    ("polynomial", "polynomial", 2.0e-5, 0.1, 57, {"power": 1.7, "lr_end": 3.0e-7}),
    ("inverse_sqrt", "inverse_sqrt", 1.0e-3, 6, 30, {}),  # timescale: the warmup
    ("inverse_sqrt", "inverse_sqrt", 1.0e-3, 0, 20, {}),  # timescale: 10000
    ("inverse_sqrt", "inverse_sqrt", 2.0e-4, 4, 25, {"timescale": 10}),
    ("cosine_warmup_with_min_lr", "cosine_warmup_with_min_lr", 2.0e-4, 5, 30, {"min_lr_rate": 0.1}),
    ("cosine_warmup_with_min_lr", "cosine_warmup_with_min_lr", 1.0e-3, 4, 27,
     {"min_lr_rate": 0.05, "warmup_lr_rate": 0.1, "num_cycles": 0.6}),
    ("cosine_warmup_with_min_lr", "cosine_warmup_with_min_lr", 3.0e-4, 0, 15, {"min_lr_rate": 0.0}),
    ("warmup_stable_decay", "warmup_stable_decay", 2.0e-4, 5, 40, {"num_decay_steps": 10}),
    ("warmup_stable_decay", "warmup_stable_decay", 1.0e-3, 4, 30,
     {"num_decay_steps": 8, "num_stable_steps": 12, "warmup_type": "cosine", "decay_type": "linear",
      "min_lr_ratio": 0.1}),  # 4 + 12 + 8 < 30: the last 6 steps at the floor
    ("warmup_stable_decay", "warmup_stable_decay", 3.0e-4, 6, 36,
     {"num_decay_steps": 12, "warmup_type": "1-sqrt", "decay_type": "1-sqrt", "min_lr_ratio": 0.02}),
    ("warmup_stable_decay", "warmup_stable_decay", 3.0e-4, 0.1, 50,
     {"num_decay_steps": 20, "decay_type": "cosine", "num_cycles": 0.75}),
]


def lrs(name: str, lr: float, warmup: int, total: int, kwargs: dict) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total,
                              scheduler_specific_kwargs=kwargs)
    values = []
    for _ in range(total):
        values.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return values


def mixtune_keys(hf_kwargs: dict, lr: float) -> dict:
    """transformers' lr_scheduler_kwargs as mixtune's train keys: the same names but for the cosine's floor."""
    keys = {}
    for name, value in hf_kwargs.items():
        if name == "min_lr_rate":
            keys["min_lr_ratio"] = value
        elif name == "min_lr":
            keys["min_lr_ratio"] = value / lr  # get_cosine_with_min_lr_schedule_with_warmup's min_lr / defaults["lr"]
        else:
            keys[name] = value
    return keys


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    cases = []
    for hf_name, schedule, lr, warmup, total, *rest in CASES:
        hf_kwargs = rest[0] if rest and isinstance(rest[0], dict) else None
        min_lr_rate = rest[0] if rest and hf_kwargs is None else None
        kwargs = hf_kwargs if hf_kwargs is not None else {} if min_lr_rate is None else {"min_lr_rate": min_lr_rate}
        args = TrainingArguments(output_dir="/tmp/unused", warmup_steps=warmup, report_to=[])
        warmup_steps = args.get_warmup_steps(total)
        case = {"hf_schedule": hf_name, "schedule": schedule, "lr": lr, "total": total,
                "warmup_steps_resolved": warmup_steps, "lrs": lrs(hf_name, lr, warmup_steps, total, kwargs)}
        if min_lr_rate is not None:
            case["min_lr_ratio"] = min_lr_rate
        if hf_kwargs is not None:
            case["hf_kwargs"] = hf_kwargs
            case["kwargs"] = mixtune_keys(hf_kwargs, lr)
        if warmup >= 1 or warmup == 0:
            case["warmup_steps"] = int(warmup)
        else:
            case["warmup_ratio"] = warmup
        cases.append(case)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"transformers": __import__("transformers").__version__, "cases": cases}, indent=1) + "\n")
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
