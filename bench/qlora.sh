#!/usr/bin/env bash
# QLoRA figures: NF4 loading memory of mistral-1b and dequantization speed, estimates for the real presets, and a
# LoRA training step of tiny-mixtral with an NF4 base beside an fp32 base.
# Usage: bench/qlora.sh [work dir, default target/bench]; the random checkpoints written there are reused.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$root/target/bench}"
cd "$root"
./mvnw -q -B -DskipTests package -pl bench -am >&2
cp="bench/target/mixtune-bench-0.1.0-SNAPSHOT.jar:bench/target/lib/*"
java -Dai.djl.offline=true -cp "$cp" io.mixtune.bench.QloraMemoryBenchmark "$work/mistral-1b" mistral-1b
java -Dai.djl.offline=true -cp "$cp" io.mixtune.bench.TrainingStepBenchmark "$work/tiny-mixtral" tiny-mixtral 4 256 10
