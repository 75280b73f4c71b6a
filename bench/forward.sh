#!/usr/bin/env bash
# Forward tokens/s of tiny-mixtral, batch 4 x 256, fp32: mixtune beside transformers on the same weights, same machine.
# Usage: bench/forward.sh [preset] [batch] [length] [iterations]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
preset="${1:-tiny-mixtral}" batch="${2:-4}" length="${3:-256}" iterations="${4:-10}"
cd "$root"
./mvnw -q -B -DskipTests package -pl bench -am >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
java -Dai.djl.offline=true -cp "bench/target/mixtune-bench-0.1.0-SNAPSHOT.jar:bench/target/lib/*" \
  io.mixtune.bench.ForwardBenchmark "$work/model" "$preset" "$batch" "$length" "$iterations" | tee "$work/java.txt"
interop/setup.sh >&2
interop/.venv/bin/python bench/forward_hf.py "$work/model" "$batch" "$length" "$iterations" | tee "$work/hf.txt"
ours=$(grep -o '[0-9]* tokens/s' "$work/java.txt" | cut -d' ' -f1)
theirs=$(grep -o '[0-9]* tokens/s' "$work/hf.txt" | cut -d' ' -f1)
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio mixtune / transformers: %.2f\n", a / b }'
