#!/usr/bin/env bash
# GGUF encoding figures: M values/s per ggml type of export-gguf's quantizers on 1 thread and on N, on a synthetic
# Gaussian tensor; fails if N threads give other bytes than one.
# Usage: bench/gguf-encode.sh [threads, default nproc] [million values, default 8] [repeats, default 3] [types: q4_K,q6_K]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./mvnw -q -B -DskipTests package -pl bench -am >&2
cp="bench/target/mixtune-bench-0.1.0-SNAPSHOT.jar:bench/target/lib/*"
java ${MIXTUNE_JAVA_OPTS:-} -cp "$cp" io.mixtune.bench.GgufEncodeBenchmark "$@"
