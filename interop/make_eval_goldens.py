"""Goldens for `mixtune eval`: trainer/src/test/resources/golden/eval/ (see interop/GOLDENS.md).

Run: interop/.venv/bin/python interop/make_eval_goldens.py [out_dir]

Per case, a tiny preset model and a random LoRA adapter on every linear layer and the lm_head, both written by mixtune
itself (bin/mixtune init-model / init-adapter, seeded: the Java test writes the same bytes, so neither is committed),
and what transformers + PEFT make of four sample chats: the mean cross-entropy over the assistant tokens, with and
without the adapter. The token ids and the assistant mask come from mistral-common (Mistral instruct v1, see
make_template_goldens.MistralReference), each chat runs alone, and nothing of mixtune's data pipeline is used.
Deterministic: fixed seeds, float32, one torch thread.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import hf_models as hf
import make_goldens as mg
import make_template_goldens as templates

EVAL_GOLDEN = hf.repo_root() / "trainer" / "src" / "test" / "resources" / "golden" / "eval"
MIXTUNE = hf.repo_root() / "bin" / "mixtune"
SAMPLE_CHATS = hf.repo_root() / "data" / "samples" / "chats.jsonl"

# Lines of data/samples/chats.jsonl: a system prompt with two turns, three turns in Chinese (byte-fallback tokens),
# two single turns; each ends
# with an assistant turn (mistral-common's finetuning mode requires it) and is longer than tiny-mistral's window of 64.
CHAT_LINES = [10, 14, 23, 13]
MAX_SEQ_LEN = 2048  # longer than every chat (the Chinese one is 1186 tokens): mixtune drops no turn
IGNORE = -100

LORA = {"r": 8, "alpha": 32, "init": "random"}  # init random: B drawn too, so the adapter moves the loss
ATTENTION = "q_proj,k_proj,v_proj,o_proj"
CASES = {
    "tiny-mistral": {"preset": "tiny-mistral", "model_seed": 5101, "adapter_seed": 5102,
                     "adapter_targets": ATTENTION + ",gate_proj,up_proj,down_proj,lm_head"},
    "tiny-mixtral": {"preset": "tiny-mixtral", "model_seed": 5201, "adapter_seed": 5202,
                     "adapter_targets": ATTENTION + ",w1,w2,w3,lm_head"},
}


def mixtune(*args: str) -> str:
    proc = subprocess.run([str(MIXTUNE), *args], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"mixtune {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def write_model_and_adapter(case: dict, work: Path) -> tuple[Path, Path]:
    """The checkpoint and adapter the Java test writes too, from the same mixtune commands."""
    model, adapter = work / "model", work / "adapter"
    mixtune("init-model", "--preset", case["preset"], "--seed", str(case["model_seed"]), "--dtype", "fp32",
            "--out", str(model))
    mixtune("init-adapter", "--model", str(model), "--out", str(adapter), "--r", str(LORA["r"]),
            "--alpha", str(LORA["alpha"]), "--targets", case["adapter_targets"], "--init", LORA["init"],
            "--seed", str(case["adapter_seed"]))
    return model, adapter


def chats() -> list[dict]:
    lines = SAMPLE_CHATS.read_text().splitlines()
    return [json.loads(lines[i]) for i in CHAT_LINES]


@torch.no_grad()
def assistant_loss(model: torch.nn.Module, encoded: list[dict]) -> tuple[float, int]:
    """Sum over chats of -log p(label) at every labelled position (labels shifted by one, as transformers does), in
    float64 from float32 logits, divided by the number of labelled tokens."""
    total, count = 0.0, 0
    for sample in encoded:
        ids = torch.tensor([sample["input_ids"]])
        labels = torch.tensor(sample["labels"][1:])
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].double()
        scored = labels != IGNORE
        log_probs = torch.log_softmax(logits[scored], dim=-1)
        total -= float(log_probs.gather(1, labels[scored].unsqueeze(1)).sum())
        count += int(scored.sum())
    return total / count, count


def write(out: Path = EVAL_GOLDEN) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _write(out)
    finally:
        torch.set_num_threads(threads)


def _write(out: Path) -> None:
    conversations = chats()
    reference = templates.MistralReference()
    encoded = [reference.encode(c["messages"]) for c in conversations]
    longest = max(len(e["input_ids"]) for e in encoded)
    assert 64 < longest <= MAX_SEQ_LEN, f"chats of up to {longest} tokens: the window must bite, nothing be cut"

    expected = {"chats": "chats.jsonl", "template": "mistral", "max_seq_len": MAX_SEQ_LEN,
                "lora": LORA, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            model_dir, adapter_dir = write_model_and_adapter(case, Path(tmp) / name)
            base = hf.load_reference(model_dir)
            base_loss, targets = assistant_loss(base, encoded)
            adapted = hf.load_peft(hf.load_reference(model_dir), adapter_dir)
            loss, adapted_targets = assistant_loss(adapted, encoded)
            assert targets == adapted_targets
            assert abs(loss - base_loss) > 1e-2, f"{name}: the adapter barely moves the loss ({base_loss} -> {loss})"
            expected["cases"][name] = {**case, "target_tokens": targets, "base_loss": base_loss, "loss": loss,
                                       "perplexity": math.exp(loss)}
            print(f"eval {name}: {targets} assistant tokens of {sum(len(e['input_ids']) for e in encoded)}, "
                  f"loss {base_loss:.6f} base, {loss:.6f} with the adapter")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "chats.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations))
    mg.write_json(out / "expected.json", expected)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else EVAL_GOLDEN)
