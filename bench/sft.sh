#!/usr/bin/env bash
# SFT training throughput, mixtune beside TRL SFTTrainer + PEFT, back to back on the same fp32 tiny-mixtral and
# tiny-mistral checkpoints: LoRA r 16 all-linear, the sample chats cut to 512 tokens and packed, one row per step.
# Prints tokens/s, GFLOP/s against the machine's fp32 matmul peak (measured once), and the ratio mixtune / TRL.
# Usage: bench/sft.sh [steps, default 20; 187 trains every packed row once]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
steps="${1:-20}"
cd "$root"
load() { cut -d' ' -f1-3 /proc/loadavg; }

./mvnw -q -B -DskipTests package -pl bench -am >&2
interop/setup.sh >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for preset in tiny-mixtral tiny-mistral; do
  bin/mixtune init-model --preset "$preset" --out "$work/$preset" --dtype fp32 >&2
done

# One peak for both: sft_trl.py's matmul_peak (torch on every core; DJL runs the same number of threads).
read -r peak peak_median threads < <(interop/.venv/bin/python -c '
import os, sys
sys.path.insert(0, "bench")
import sft_trl, torch
torch.set_num_threads(os.cpu_count())
best, median = sft_trl.matmul_peak()
print(f"{best:.1f} {median:.1f} {torch.get_num_threads()}")')
echo "fp32 matmul 1024x1024 @ 1024x1024, $threads threads: best $peak GFLOP/s, median $peak_median GFLOP/s (load average $(load))"

java -Dai.djl.offline=true -cp "bench/target/mixtune-bench-0.1.0-SNAPSHOT.jar:bench/target/lib/*" \
  io.mixtune.bench.SftBenchmark --steps "$steps" --peak "$peak" --phases 5 --trace "$work/trace.json" \
  "$work/tiny-mixtral" "$work/tiny-mistral" | tee "$work/mixtune.txt"
interop/.venv/bin/python bench/sft_trl.py --peak "$peak" --steps "$steps" \
  --model "$work/tiny-mixtral" --model "$work/tiny-mistral" | tee "$work/trl.txt"

echo "same work: both cut the same 200 chats to their first 512 tokens and pack them into rows of 512 (TRL best-fit"
echo "decreasing, mixtune first-fit decreasing: compare the rows and per-row means above); each trainer shuffles the"
echo "rows its own way, so the timed steps hold different rows and the figures are per token (tokens/s, targets/s)."
echo "With steps >= rows, each trains every row once."
for model in tiny-mixtral tiny-mistral; do
  ours=$(grep "^sft-mixtune $model: tokens/s per step" "$work/mixtune.txt" | grep -o '[0-9]*' | tail -2 | xargs)
  theirs=$(grep "^sft-trl $model: tokens/s per step" "$work/trl.txt" | grep -o '[0-9]*' | tail -2 | xargs)
  awk -v m="$model" -v a="$ours" -v b="$theirs" -v l="$(load)" 'BEGIN { split(a, x, " "); split(b, y, " ");
    printf "ratio mixtune / TRL tokens/s, %s: %.2f median-based (%d / %d), %.2f fastest-step (%d / %d); load average %s\n",
      m, x[1] / y[1], x[1], y[1], x[2] / y[2], x[2], y[2], l }'
done
