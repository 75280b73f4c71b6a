#!/usr/bin/env bash
# WARM (Rame et al. 2024) on the bundled preference pairs: recipes/warm-reward.yaml trains 3 reward models from one
# shared start (the same base, LoRA and score head initialisation, the same 20 held-out pairs) that differ in data order,
# learning rate and LoRA dropout, averages them (LoRA by rank concatenation, the head linearly, as mixtune merge
# --method warm) and prints each member's held-out accuracy and mean margin beside the average's (also in
# WORK_DIR/warm-report.json). NOISE=0.25 swaps chosen and rejected in that share of the training pairs (seeded, the same
# pairs for every member; never the held-out ones), the label noise WARM holds up best under.
# Usage: [NOISE=F] bench/warm-reward.sh [WORK_DIR]   (tiny Mistral preset, CPU, a few minutes)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
noise="${NOISE:-0}"
work="${1:-$root/out/warm-reward-noise-$noise}"
mkdir -p "$(dirname "$work")"
cd "$root"
"$root/bin/mixtune" train --recipe "$root/recipes/warm-reward.yaml" --force --set "reward.label_noise=$noise" \
  --set "output_dir=$work" > "$work.log"
sed -n '/^label noise: /p; /^WARM report on/,/^  WARM average/p' "$work.log" | uniq
