#!/usr/bin/env bash
# Memory plan against measured peak memory on mistral-1b (random weights, NF4, LoRA r 16 on every linear layer,
# dropout 0.05, one micro-batch of 1 x max_seq_len tokens all targets): one training step with gradient checkpointing
# off, then on, each in its own JVM (io.mixtune.trainer.plan.PeakMemoryProbe says what is measured).
# Usage: bench/plan.sh [work dir, default target/bench-plan] [max_seq_len, default 512]
# The random checkpoint (2.25 GB) is written to the work dir once and reused. Each run takes a few minutes and up to
# 16 GB of memory (without checkpointing every layer's activations and dequantized weights stay for backward).
# MALLOC_MMAP_THRESHOLD_ makes glibc map and unmap every allocation over 64 KiB, so resident memory follows the
# arrays alive; DEFAULT_MALLOC=1 also runs each case with glibc's defaults, whose freed-block caching adds to the peak.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$root/target/bench-plan}"
length="${2:-512}"
cd "$root"
./mvnw -q -B -DskipTests package -pl trainer -am >&2
mkdir -p "$work"
cat > "$work/mistral-1b.yaml" <<YAML
model: {preset: mistral-1b, quantize: nf4}
lora: {r: 16, alpha: 16, dropout: 0.05, targets: [all-linear]}
data: {files: [$root/data/samples/chats.jsonl], max_seq_len: $length}
train: {micro_batch_size: 1, max_steps: 1}
output_dir: $work/out
YAML
probe() {
  java -Xms1536m -Xmx1536m -XX:+AlwaysPreTouch -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dai.djl.offline=true -cp trainer/target/mixtune.jar \
    io.mixtune.trainer.plan.PeakMemoryProbe "$work/mistral-1b.yaml" $((length - 1)) 1 "$@"
}
for checkpointing in false true; do
  echo "== train.gradient_checkpointing=$checkpointing, glibc mapping every allocation over 64 KiB"
  MALLOC_MMAP_THRESHOLD_=65536 probe "train.gradient_checkpointing=$checkpointing"
  if [[ "${DEFAULT_MALLOC:-0}" == 1 ]]; then
    echo "== train.gradient_checkpointing=$checkpointing, glibc's default malloc"
    probe "train.gradient_checkpointing=$checkpointing"
  fi
done
