"""The SFT step of transformers + PEFT on the checkpoints and tokens SizeSweepBenchmark.java writes: the same math.

    interop/.venv/bin/python bench/sweep_hf.py --work DIR [--steps 5] [--warmup 2] [--batch 4] [--threads N] [--trace] SPEC...

Each DIR/SPEC holds a random fp32 checkpoint and tokens.txt (one row of token ids per line, `batch` rows per step).
What runs, as on the Java side: float32 on CPU, eager attention (no padding, so a plain causal mask), LoRA r 16,
alpha 16, dropout 0 on q/k/v/o and the MLP (every expert's w1/w2/w3 on Mixtral through PEFT's fused-expert parameters;
neither router nor lm_head), labels = input ids (every next token trained), the load-balancing loss on for Mixtral,
clipping at 1.0, AdamW (torch's, lr 1e-4, no weight decay). FLOPs as bench/sft_trl.py counts them. --trace runs one more step under torch's profiler and prints its self time
per operator and input shapes, the matmuls' share first (the counterpart of SizeSweepBenchmark --trace).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sft_trl  # noqa: E402


def run(model_dir: Path, args) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    rows = [[int(t) for t in line.split()] for line in (model_dir / "tokens.txt").read_text().splitlines()]
    steps = args.warmup + args.steps
    assert len(rows) >= steps * args.batch, f"{model_dir}/tokens.txt has {len(rows)} rows, need {steps * args.batch}"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    config = model.config
    if config.model_type == "mixtral":
        config.output_router_logits = True
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=sft_trl.lora_targets(config),
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(model, lora)
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    seconds, cpu_seconds = [], []

    def train_step(step: int) -> None:
        ids = torch.tensor(rows[step * args.batch:(step + 1) * args.batch])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for step in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        train_step(step)
        if step >= args.warmup:
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu_start)
    length = len(rows[0])
    flops = args.batch * sft_trl.step_flops(config, 16, [length], length - 1)
    median = statistics.median(seconds)
    peak = f"{100 * flops / median / 1e9 / args.peak:.0f}% of the {args.peak:.0f} GFLOP/s matmul peak" \
        if args.peak else "no matmul peak given"
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"sweep-hf {model_dir.name}: {args.batch} x {length} tokens, all trained, {args.steps} steps after "
          f"{args.warmup} warm-up, {torch.get_num_threads()} threads: median step {median * 1e3:.1f} ms (best "
          f"{min(seconds) * 1e3:.1f}), {args.batch * length / median:.0f} tokens/s, {flops / 1e9:.2f} GFLOP/step, "
          f"{flops / median / 1e9:.1f} GFLOP/s ({peak}); process CPU time per step: median "
          f"{statistics.median(cpu_seconds) * 1e3:.1f} ms; load average {load}", flush=True)
    if args.trace:
        print_profile(model_dir.name, lambda: train_step(steps - 1))


def print_profile(name: str, step) -> None:
    """Self time of one step's operators, by operator and input shapes; matmuls (mm, bmm, addmm) summed first."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    rows = [(e.self_cpu_time_total / 1e3, e.count, e.key, str(e.input_shapes))
            for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")]
    total = sum(r[0] for r in rows)
    matmuls = sum(r[0] for r in rows if r[2] in ("aten::mm", "aten::bmm", "aten::addmm"))
    print(f"sweep-hf {name}: one step under torch's profiler: {sum(r[1] for r in rows)} operator calls, "
          f"{total:.1f} ms inside operators, matmuls (mm, bmm, addmm) {matmuls:.1f} ms ({100 * matmuls / total:.0f}%), "
          f"the rest {total - matmuls:.1f} ms; top by self time:")
    for self_ms, count, key, shapes in sorted(rows, reverse=True)[:25]:
        print(f"  {key:30s} {count:5d} calls {self_ms:9.2f} ms self  {shapes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--peak", type=float, default=0.0)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for spec in args.specs:
        run(args.work / spec, args)


if __name__ == "__main__":
    main()
