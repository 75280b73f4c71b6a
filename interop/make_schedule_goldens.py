"""Golden for mixtune's learning-rate schedules: trainer/src/test/resources/golden/schedule/schedules.json.

Run: interop/.venv/bin/python interop/make_schedule_goldens.py [out.json]

Per case, the learning rate transformers 5.18's Trainer gives each optimizer step: `get_scheduler(name, ...)` on a
torch optimizer, with the warmup `TrainingArguments.get_warmup_steps(total)` makes of `warmup_steps` (a count, or a
fraction of the steps below 1: math.ceil(total x fraction)), read before each step as `Trainer` logs it and
`scheduler.step()` after. `lrs` has `total` values, step 0 first; cosine_with_min_lr's `min_lr_rate` is mixtune's
`min_lr_ratio`. The Java test (LearningRateScheduleGoldenTest) runs
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
# min_lr_rate: cosine_with_min_lr's lr_scheduler_kwargs, mixtune's train.min_lr_ratio])
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
]


def lrs(name: str, lr: float, warmup: int, total: int, min_lr_rate: float | None) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    kwargs = {} if min_lr_rate is None else {"min_lr_rate": min_lr_rate}
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total,
                              scheduler_specific_kwargs=kwargs)
    values = []
    for _ in range(total):
        values.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return values


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    cases = []
    for hf_name, schedule, lr, warmup, total, *rest in CASES:
        min_lr_rate = rest[0] if rest else None
        args = TrainingArguments(output_dir="/tmp/unused", warmup_steps=warmup, report_to=[])
        warmup_steps = args.get_warmup_steps(total)
        case = {"hf_schedule": hf_name, "schedule": schedule, "lr": lr, "total": total,
                "warmup_steps_resolved": warmup_steps, "lrs": lrs(hf_name, lr, warmup_steps, total, min_lr_rate)}
        if min_lr_rate is not None:
            case["min_lr_ratio"] = min_lr_rate
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
