"""Golden for mixtune's LoRA+ learning rates: trainer/src/test/resources/golden/loraplus/loraplus.json.

Run: interop/.venv/bin/python interop/make_loraplus_goldens.py [out.json]

A tiny PEFT model (LoRA on an embedding and two linears) gets its optimizer from peft 0.21's
`create_loraplus_optimizer(model, torch.optim.AdamW, lr=..., loraplus_lr_ratio=..., loraplus_lr_embedding=...,
loraplus_weight_decay=...)` and its schedule from transformers' `get_scheduler`, which scales each parameter group's
own initial lr (LambdaLR). Fixed gradients are set on every LoRA parameter before each `optimizer.step()`; the file
keeps the parameters' names as PEFT saves them (no adapter name), their initial values, each step's gradients and
the values after each step. The Java test (LoraPlusGoldenTest) runs mixtune's AdamW with LoraPlus's factors and
mixtune's schedule of the same name and compares every value.
"""

from __future__ import annotations

import json
import sys

import torch
from peft import LoraConfig, get_peft_model
from peft.optimizers import create_loraplus_optimizer
from transformers import get_scheduler

import hf_models as hf

OUT = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "loraplus" / "loraplus.json"

LR = 1.0e-2
RATIO = 16.0
EMBEDDING_LR = 1.0e-3
WEIGHT_DECAY = 0.05
SCHEDULE = "cosine"
WARMUP = 1
STEPS = 4


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(5, 4)
        self.q = torch.nn.Linear(4, 3, bias=False)
        self.v = torch.nn.Linear(3, 4, bias=False)


def main() -> None:
    out = hf.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    torch.manual_seed(0)
    model = get_peft_model(Tiny(), LoraConfig(r=2, lora_alpha=4, target_modules=["emb", "q", "v"],
                                              init_lora_weights=False))
    params = [(name.replace(".default", ""), p) for name, p in model.named_parameters() if p.requires_grad]
    optimizer = create_loraplus_optimizer(model, torch.optim.AdamW, lr=LR, loraplus_lr_ratio=RATIO,
                                          loraplus_lr_embedding=EMBEDDING_LR, loraplus_weight_decay=WEIGHT_DECAY)
    scheduler = get_scheduler(SCHEDULE, optimizer, num_warmup_steps=WARMUP, num_training_steps=STEPS)
    initial = {name: p.detach().flatten().tolist() for name, p in params}
    steps = []
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        lrs = [group["lr"] for group in optimizer.param_groups]
        gradients = {}
        for name, p in params:
            p.grad = torch.randn(p.shape, generator=generator)
            gradients[name] = p.grad.flatten().tolist()
        optimizer.step()
        scheduler.step()
        steps.append({"group_lrs": lrs, "gradients": gradients,
                      "values": {name: p.detach().flatten().tolist() for name, p in params}})
    case = {"lr": LR, "loraplus_lr_ratio": RATIO, "loraplus_lr_embedding": EMBEDDING_LR, "weight_decay": WEIGHT_DECAY,
            "schedule": SCHEDULE, "warmup_steps": WARMUP, "steps_total": STEPS,
            "parameters": [{"name": name, "shape": list(p.shape)} for name, p in params],
            "initial": initial, "steps": steps}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"peft": __import__("peft").__version__, "torch": torch.__version__, "case": case},
                              indent=1) + "\n")
    print(f"wrote {out}: {len(params)} parameters, {STEPS} steps")


if __name__ == "__main__":
    main()
