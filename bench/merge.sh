#!/usr/bin/env bash
# Merging figures: peak memory and tensors/s of mixtune merge (linear, ties) on three random checkpoints of a preset.
# Usage: bench/merge.sh [work dir, default /tmp/mixtune-merge-bench] [preset, default mistral-1b]
# mistral-1b writes 3 x 2.25 GB of inputs plus one 2.25 GB output at a time; the work dir is deleted at the end
# unless KEEP=1. Each method runs in its own JVM, so one's garbage does not count against the other.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-/tmp/mixtune-merge-bench}"
preset="${2:-mistral-1b}"
cd "$root"
./mvnw -q -B -DskipTests package -pl bench -am >&2
cp="bench/target/mixtune-bench-0.1.0-SNAPSHOT.jar:bench/target/lib/*"
for method in linear ties; do
  java -Dai.djl.offline=true ${MIXTUNE_JAVA_OPTS:-} -cp "$cp" io.mixtune.bench.MergeBenchmark "$work" "$preset" "$method"
done
if [[ "${KEEP:-0}" != 1 ]]; then
  rm -rf "$work"
fi
