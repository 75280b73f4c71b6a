#!/usr/bin/env bash
# Data pipeline figures: read + tokenize data/samples/chats.jsonl repeated to ~20k conversations with the mistral
# template (mixtune beside datasets.map on the same tokenizer.json), the data cache, and peak memory while streaming
# a generated 1M-conversation file (written under the work dir and deleted after).
# Usage: bench/data.sh [conversations, default 20000] [streamed conversations, default 1000000] [work dir]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
conversations="${1:-20000}" streamed="${2:-1000000}"
if [[ -n "${3:-}" ]]; then work="$3"; mkdir -p "$work"; else work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT; fi
cd "$root"
./mvnw -q -B -DskipTests package -pl bench -am >&2
run() { java -Dai.djl.offline=true -cp "bench/target/mixtune-bench-0.1.0-SNAPSHOT.jar:bench/target/lib/*" "$@"; }
run io.mixtune.bench.DataPipelineBenchmark throughput data/samples/chats.jsonl "$work" "$conversations" \
  | tee "$work/java.txt"
# Its own JVM, so its peak memory is its own; the default heap limit (a quarter of RAM), so that a reader holding on
# to records would show.
run io.mixtune.bench.DataPipelineBenchmark stream "$work" "$streamed"
interop/setup.sh >&2
interop/.venv/bin/python bench/data_hf.py data/samples/chats.jsonl "$conversations" | tee "$work/hf.txt"
ours=$(grep -o '[0-9,]* tokens/s' "$work/java.txt" | head -1 | cut -d' ' -f1 | tr -d ,)
theirs=$(grep -o '[0-9,]* tokens/s' "$work/hf.txt" | head -1 | cut -d' ' -f1 | tr -d ,)
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio mixtune / datasets per-example map (read + tokenize): %.2f\n", a / b }'
