#!/usr/bin/env bash
# The SFT step across model sizes, mixtune beside transformers + PEFT doing the same math, back to back per size:
# random fp32 Mixtral- and Mistral-shaped checkpoints (SizeSweepBenchmark.java says the shapes), 4 x 256 random tokens
# per step with every token trained, LoRA r 16 on attention and every expert (or MLP), AdamW, clipping.
# Prints per size and side: step time, tokens/s, GFLOP/s and the share of the fp32 matmul peak measured in this run,
# the process CPU time per step, then the ratio mixtune / transformers + PEFT by median step and by CPU time.
# Usage: [THREADS=n] [STEPS=5] bench/sweep.sh [SPEC...]   (default: mixtral-256-4 mixtral-512-4 mixtral-1024-4
#        mistral-1024-4 mistral-2048-4); checkpoints go to ${WORK:-/tmp/mixtune-sweep} and stay there for reruns.
# THREADS (default: every core) is the thread count of the peak and of both trainers; on a busy machine THREADS=1
# gives steadier figures, and the CPU time per step is then the work itself.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
threads="${THREADS:-$(nproc)}"
steps="${STEPS:-5}"
work="${WORK:-/tmp/mixtune-sweep}"
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(mixtral-256-4 mixtral-512-4 mixtral-1024-4 mistral-1024-4 mistral-2048-4)
cd "$root"
load() { cut -d' ' -f1-3 /proc/loadavg; }

./mvnw -q -B -DskipTests package -pl bench -am >&2
interop/setup.sh >&2
mkdir -p "$work"

read -r peak peak_median < <(bench/matmul_peak.sh "$threads")
echo "fp32 matmul 1024x1024 @ 1024x1024, $threads threads: best $peak GFLOP/s, median $peak_median GFLOP/s (load average $(load))"

field() { sed -n "s|.*$1 \([0-9.]*\) ms.*|\1|p" <<<"$2"; }
for spec in "${specs[@]}"; do
  ours="$(java -Dai.djl.offline=true -cp "bench/target/mixtune-bench-0.1.0-SNAPSHOT.jar:bench/target/lib/*" \
    io.mixtune.bench.SizeSweepBenchmark --work "$work" --steps "$steps" --threads "$threads" --peak "$peak" "$spec" \
    | grep '^sweep-mixtune')"
  echo "$ours"
  theirs="$(interop/.venv/bin/python bench/sweep_hf.py --work "$work" --steps "$steps" --threads "$threads" \
    --peak "$peak" "$spec" 2>/dev/null | grep '^sweep-hf')"
  echo "$theirs"
  awk -v s="$spec" -v a="$(field "median step" "$ours")" -v b="$(field "median step" "$theirs")" \
      -v ca="$(field "CPU time per step: median" "$ours")" -v cb="$(field "CPU time per step: median" "$theirs")" \
      -v l="$(load)" 'BEGIN { printf "ratio mixtune / transformers + PEFT, %s: %.2fx by median step (%.0f / %.0f ms), " \
      "%.2fx by process CPU time per step (%.0f / %.0f ms); load average %s\n", s, b / a, b, a, cb / ca, cb, ca, l }'
done
