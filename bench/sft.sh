#!/usr/bin/env bash
# SFT training throughput, mixtune beside TRL SFTTrainer + PEFT, back to back on the same fp32 tiny-mixtral and
# tiny-mistral checkpoints: LoRA r 16 all-linear, the sample chats cut to 512 tokens and packed, one row per step.
# Prints tokens/s, GFLOP/s against the machine's fp32 matmul peak (measured once), and the ratio mixtune / TRL.
# Usage: [THREADS=n] bench/sft.sh [steps, default 20; 187 trains every packed row once]
# THREADS (default: every core) is the thread count of the matmul peak and of both trainers; on a busy machine
# THREADS=1 gives steadier figures, and the process CPU time per token is then the work itself.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
steps="${1:-20}"
threads="${THREADS:-$(nproc)}"
cd "$root"
load() { cut -d' ' -f1-3 /proc/loadavg; }

./mvnw -q -B -DskipTests package -pl bench -am >&2
interop/setup.sh >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for preset in tiny-mixtral tiny-mistral; do
  bin/mixtune init-model --preset "$preset" --out "$work/$preset" --dtype fp32 >&2
done

# One peak for both: sft_trl.py's matmul_peak, with the threads the trainers get.
read -r peak peak_median < <(bench/matmul_peak.sh "$threads")
echo "fp32 matmul 1024x1024 @ 1024x1024, $threads threads: best $peak GFLOP/s, median $peak_median GFLOP/s (load average $(load))"

java -Dai.djl.offline=true -cp "bench/target/mixtune-bench-0.1.0-SNAPSHOT.jar:bench/target/lib/*" \
  io.mixtune.bench.SftBenchmark --steps "$steps" --peak "$peak" --threads "$threads" --phases 5 --trace "$work/trace.json" \
  "$work/tiny-mixtral" "$work/tiny-mistral" | tee "$work/mixtune.txt"
interop/.venv/bin/python bench/sft_trl.py --peak "$peak" --threads "$threads" --steps "$steps" \
  --model "$work/tiny-mixtral" --model "$work/tiny-mistral" | tee "$work/trl.txt"

echo "same work: both cut the same 200 chats to their first 512 tokens and pack them into rows of 512 (best-fit"
echo "decreasing, TRL's bfd, both: compare the rows and per-row means above); each trainer shuffles the"
echo "rows its own way, so the timed steps hold different rows and the figures are per token (tokens/s, targets/s)."
echo "With steps >= rows, each trains every row once."
per_step() { # "median fastest cpu-ms-per-1000-tokens" from a trainer's "tokens/s per step" line
  sed -n "s|^$1: tokens/s per step: median \([0-9]*\), fastest \([0-9]*\); process CPU time per 1000 tokens: median \([0-9.]*\) ms.*|\1 \2 \3|p" "$2"
}
for model in tiny-mixtral tiny-mistral; do
  awk -v m="$model" -v a="$(per_step "sft-mixtune $model" "$work/mixtune.txt")" \
      -v b="$(per_step "sft-trl $model" "$work/trl.txt")" -v l="$(load)" 'BEGIN { split(a, x, " "); split(b, y, " ");
    printf "ratio mixtune / TRL tokens/s, %s: %.2f median-based (%d / %d), %.2f fastest-step (%d / %d); by process CPU " \
      "time per token %.2f (%.1f / %.1f ms per 1000 tokens); load average %s\n",
      m, x[1] / y[1], x[1], y[1], x[2] / y[2], x[2], y[2], y[3] / x[3], y[3], x[3], l }'
done
