#!/usr/bin/env bash
# The machine's fp32 matmul peak with THREADS threads (argument 1): "best median" GFLOP/s of a 1024 x 1024 matmul,
# sft_trl.py's matmul_peak, which bench/sft.sh and bench/sweep.sh put their GFLOP/s beside.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
interop/.venv/bin/python -c '
import sys
sys.path.insert(0, "bench")
import sft_trl, torch
torch.set_num_threads(int(sys.argv[1]))
best, median = sft_trl.matmul_peak()
print(f"{best:.1f} {median:.1f}")' "$1"
