#!/usr/bin/env bash
# WARM (Rame et al. 2024) on the bundled preference pairs: M reward models from one shared initialisation (the same
# train.seed: the same LoRA A, zero B and score head, the same data order) that differ in learning rate and LoRA
# dropout, their weight average (mixtune merge --method warm: LoRA by rank concatenation, the head linearly), and the
# held-out accuracy of each member and of the average, side by side. The last 20 pairs are held out. NOISE=0.25 flips
# chosen and rejected of that share of the training pairs (seeded), the label noise WARM holds up best under.
# Usage: [NOISE=F] bench/warm-reward.sh [WORK_DIR]   (tiny Mistral preset, CPU, a few minutes)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$root/out/warm-reward}"
mkdir -p "$work"
head -n 180 "$root/data/samples/preferences.jsonl" | python3 -c '
import json, random, sys
noise, rng = float(sys.argv[1]), random.Random(1234)
for line in sys.stdin:
    pair = json.loads(line)
    if rng.random() < noise:
        pair["chosen"], pair["rejected"] = pair["rejected"], pair["chosen"]
        if "score_chosen" in pair:
            pair["score_chosen"], pair["score_rejected"] = pair["score_rejected"], pair["score_chosen"]
    print(json.dumps(pair))
' "${NOISE:-0}" > "$work/train.jsonl"
tail -n 20 "$root/data/samples/preferences.jsonl" > "$work/heldout.jsonl"
members=("2.0e-3 0.0" "1.0e-3 0.1" "3.0e-3 0.05")
inputs=()
for i in "${!members[@]}"; do
  read -r lr dropout <<< "${members[$i]}"
  out="$work/member-$i"
  "$root/bin/mixtune" train --recipe "$root/recipes/quickstart-reward.yaml" --force \
    --set "data.files=[$work/train.jsonl]" --set data.validation_ratio=0 --set "train.lr=$lr" \
    --set "lora.dropout=$dropout" --set "output_dir=$out" > "$work/member-$i.log"
  inputs+=("$out/adapter")
done
"$root/bin/mixtune" merge --method warm --inputs "$(IFS=,; echo "${inputs[*]}")" --out "$work/warm" --force \
  > "$work/merge.log"
base="$work/member-0/base-model"
for i in "${!members[@]}"; do
  printf 'member %d (lr %s, dropout %s): ' "$i" ${members[$i]}
  "$root/bin/mixtune" reward --model "$base" --adapter "${inputs[$i]}" --data "$work/heldout.jsonl" \
    --max-seq-len 128 --output "$work/member-$i-scores.jsonl"
done
printf 'warm average of %d: ' "${#members[@]}"
"$root/bin/mixtune" reward --model "$base" --adapter "$work/warm" --data "$work/heldout.jsonl" --max-seq-len 128 \
  --output "$work/warm-scores.jsonl"
