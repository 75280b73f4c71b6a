#!/usr/bin/env bash
# Seconds per weight of PiSSA's and OLoRA's starts at Mistral-7B's shapes, and the subspace iteration against the
# exact SVD. Usage: bench/lora-init.sh [cpu|gpu] [r]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./mvnw -q -B -DskipTests package -pl bench -am >&2
java -Dai.djl.offline=true -cp "bench/target/mixtune-bench-0.1.0-SNAPSHOT.jar:bench/target/lib/*" \
  io.mixtune.bench.LoraInitBenchmark "${1:-cpu}" "${2:-16}"
