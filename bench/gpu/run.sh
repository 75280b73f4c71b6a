#!/usr/bin/env bash
# The GPU device check of issue #19, on any Linux machine with an NVIDIA GPU, Java 17 (or bench/gpu/dist from
# prepare.sh) and a CUDA libtorch DJL 0.35.1 can drive (PYTORCH_LIBRARY_PATH; default: this python3's torch/lib).
#   0. probe: `mixtune env` and one tiny forward on the GPU with that libtorch; when the jar's JNI does not work with
#      it, says what happened, builds DJL's JNI source against it (build-jni.sh; BUILD_JNI=0 skips) and probes again,
#      else (no g++, or the build fails) probes the JNI prepare.sh built against another torch, if dist carries one;
#      exit 3 when none works
#   a. tiny-mixtral QLoRA, 20 steps, fp32, on the GPU and on the CPU from the same seed (dropout 0): every step's
#      loss within a relative 1e-3; with EMA, SWA and LaWA kept and a checkpoint at step 10, the averages' adapters
#      of the GPU run within a relative 1e-3 of the CPU run's, and the GPU run resumed from its step-10 checkpoint
#      ending with the adapters it ended with (within 1e-5: CUDA's atomic adds in the MoE backward may round apart)
#   b. a DPO run of one step a stage (quickstart-dpo) and `generate` with the trained adapter on the GPU
#   c. Mistral-7B- and Mixtral-8x7B-shaped random checkpoints (init-model --layers: the real per-layer shapes, fewer
#      layers, since the full bf16 Mixtral is 93 GB against the 64 GB disk of the lent machine), 3 QLoRA steps each of
#      the shipped recipes at 1 row (7B: 1 x 2048, Mixtral: 1 x 1024), fp16: peak GPU memory (nvidia-smi, sampled every
#      0.1 s, minus the memory in use before) next to `mixtune plan` for the same config (goal: within 10%), tokens/s
# Prints a table; exits 1 on a miss. Usage: bench/gpu/run.sh [work dir, default /tmp/mixtune-gpu]
# Env: LAYERS_7B (default 4), LAYERS_MIXTRAL (default 2), STEPS_A (20), SKIP_C=1 to stop after b, BUDGET_S and
# C_CASE_S (a c case is skipped with under C_CASE_S of BUDGET_S seconds left), OUT (logs copied there); GPU=cpu runs the
# plumbing on a machine without a GPU (every "gpu" run on the CPU, c skipped): a test of this script, not of a GPU.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="${1:-/tmp/mixtune-gpu}"
mkdir -p "$work"
cd "$root"
misses=0
gpu="${GPU:-gpu}"
[ "$gpu" == gpu ] || SKIP_C=1
declare -a table=()
# Each row is printed as soon as it is made, so a run cut short by a time limit still shows what it measured, and
# again in the table at the end. With OUT set (the device tool's folder that comes back), the logs, the probe's and
# generate's outputs and the table are copied there on exit, whatever the exit.
row() {
  local line; line="$(printf '%-44s %-26s %-26s %s' "$1" "$2" "$3" "$4")"
  table+=("$line"); echo "row: $line" >&2
}
log() { echo "== $*" >&2; }
if [ -n "${OUT:-}" ]; then
  trap 'mkdir -p "$OUT/gpu-check"; cp "$work"/*.log "$work"/*.txt "$OUT/gpu-check/" 2>/dev/null
    printf "%s\n" "${table[@]}" > "$OUT/gpu-check/table.txt"' EXIT
fi
# BUDGET_S: the seconds this run may take (0, the default: no limit); a part that would not finish in what is left is
# skipped with a row saying so, rather than cut by the caller's timeout before the table prints
time_for() { [ "${BUDGET_S:-0}" -eq 0 ] || [ $((BUDGET_S - SECONDS)) -ge "$1" ]; }

# --- glibc: DJL 0.35.1's tokenizers library and Debian's Java 17 (dist/runtime) need 2.34 (objdump -T); say so at once
glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
if [ -n "$glibc" ] && [ "$(printf '%s\n2.34\n' "$glibc" | sort -V | head -n 1)" != 2.34 ]; then
  echo "glibc $glibc here: mixtune's native libraries need 2.34 or newer (DJL's libtokenizers.so; the jlink runtime" \
    "of Debian's Java 17 too), so nothing can run" >&2
  exit 3
fi

# --- Java and the jars -------------------------------------------------------------------------------------------
if [ ! -d bench/gpu/dist ] && [ -f bench/gpu/dist.tar.gz ]; then tar -C bench/gpu -xzf bench/gpu/dist.tar.gz; fi
if [ -x bench/gpu/dist/runtime/bin/java ]; then
  java_bin=bench/gpu/dist/runtime/bin/java; classpath="bench/gpu/dist/mixtune.jar:bench/gpu/dist/lib/*"
else
  java_bin=java; classpath="trainer/target/mixtune.jar:trainer/target/lib/*"
fi
mixtune() { "$java_bin" -Dai.djl.offline=true ${MIXTUNE_JAVA_OPTS:-} -cp "$classpath" io.mixtune.trainer.cli.Mixtune "$@"; }

# --- libtorch ----------------------------------------------------------------------------------------------------
if [ -z "${PYTORCH_LIBRARY_PATH:-}" ] && python3 -c 'import torch' 2>/dev/null; then
  PYTORCH_LIBRARY_PATH="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib"
fi
if [ -n "${PYTORCH_LIBRARY_PATH:-}" ]; then
  export PYTORCH_LIBRARY_PATH PYTORCH_VERSION="${PYTORCH_VERSION:-2.7.1}" PYTORCH_FLAVOR="${PYTORCH_FLAVOR:-cu128}"
fi
# the torch whose lib folder is used (its version.py), else python3's
torch_version="$(sed -n "s/^__version__[^'\"]*['\"]\([^'\"]*\).*/\1/p" "${PYTORCH_LIBRARY_PATH:-/nonexistent}/../version.py" \
  2>/dev/null)"
[ -n "$torch_version" ] || torch_version="$(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo unknown)"
log "libtorch: ${PYTORCH_LIBRARY_PATH:-the bundled CPU one} (torch $torch_version) as" \
  "PYTORCH_VERSION=${PYTORCH_VERSION:-} PYTORCH_FLAVOR=${PYTORCH_FLAVOR:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || echo "no nvidia-smi" >&2

# --- 0. probe ----------------------------------------------------------------------------------------------------
probe() { # probe NAME: mixtune env and a tiny forward on the GPU; 0 when both work
  mixtune --verbose env > "$work/env-$1.txt" 2>&1; local env_rc=$?
  cat "$work/env-$1.txt" >&2
  mixtune --verbose generate --model "$work/tiny-mixtral" --prompt-ids 1,2,3 --max-new-tokens 2 --device "$gpu" \
    --output-ids > "$work/probe-$1.txt" 2>&1; local probe_rc=$?
  [ $env_rc -eq 0 ] && [ $probe_rc -eq 0 ] && return 0
  echo "PROBE FAILED ($1): DJL 0.35.1's ${PYTORCH_FLAVOR:-} JNI as PYTORCH_VERSION=${PYTORCH_VERSION:-} with torch" \
    "$torch_version from ${PYTORCH_LIBRARY_PATH:-}: mixtune env exit $env_rc, a tiny forward on the GPU exit" \
    "$probe_rc; first error lines:" >&2
  grep -h -m 5 -E "Exception|Error|error|cannot|undefined symbol|not allowed" "$work/env-$1.txt" \
    "$work/probe-$1.txt" >&2
  tail -n 30 "$work/probe-$1.txt" >&2
  return 1
}
mixtune init-model --preset tiny-mixtral --out "$work/tiny-mixtral" --dtype fp32 --force >&2
probe_name="jar-jni"
if ! probe jar-jni; then
  # The ways left: DJL's JNI source built here against this torch (bench/gpu/build-jni.sh, needs g++), else the JNI
  # prepare.sh built against another torch of the same CUDA major, if dist carries one (bench/gpu/dist/jni-prebuilt).
  probe_name=""
  if [ "${BUILD_JNI:-1}" == 1 ] && command -v g++ >/dev/null; then
    log "building DJL's JNI against this torch (bench/gpu/build-jni.sh)"
    exports="$(bench/gpu/build-jni.sh "$work/jni-build" 2> "$work/build-jni.log" | tail -n 1)"
    tail -n 5 "$work/build-jni.log" >&2
    if [[ "$exports" == export* ]]; then
      eval "$exports"
      probe built-jni && probe_name="built-jni"
    else
      echo "build-jni.sh failed; its first errors and last lines ($work/build-jni.log):" >&2
      grep -m 10 -E "error|undefined reference" "$work/build-jni.log" >&2
      tail -n 10 "$work/build-jni.log" >&2
    fi
  else
    log "no JNI build: $([ "${BUILD_JNI:-1}" == 1 ] && echo "no g++ on this machine" || echo "BUILD_JNI=0")"
  fi
  if [ -z "$probe_name" ] && [ -f bench/gpu/dist/jni-prebuilt/libdjl_torch.so ]; then
    log "trying the JNI prepare.sh built for $(cat bench/gpu/dist/jni-prebuilt/built-for)"
    exports="$(JNI_PREBUILT=bench/gpu/dist/jni-prebuilt bench/gpu/build-jni.sh 2> "$work/prebuilt-jni.log" \
      | tail -n 1)"
    cat "$work/prebuilt-jni.log" >&2
    if [[ "$exports" == export* ]]; then
      eval "$exports"
      probe prebuilt-jni && probe_name="prebuilt-jni"
    fi
  fi
  [ -n "$probe_name" ] || exit 3
fi
row "probe: tiny forward on the GPU" "ok ($probe_name)" "${PYTORCH_VERSION:-bundled} ${PYTORCH_FLAVOR:-}$(
  [ "$probe_name" == prebuilt-jni ] && echo ", JNI for $(cat bench/gpu/dist/jni-prebuilt/built-for)")" \
  "$(tail -n 1 "$work/probe-$probe_name.txt")"

# metrics.jsonl -> one loss per line
losses() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if "loss" in r and "step" in r: print(r["step"], repr(r["loss"]))' "$1"; }
last_metric() { python3 -c 'import json,sys
v = [json.loads(l)[sys.argv[2]] for l in open(sys.argv[1]) if sys.argv[2] in json.loads(l)]
print(v[-1] if v else "nan")' "$1" "$2"; }

# --- a. the same 20 steps on the GPU and on the CPU --------------------------------------------------------------
steps_a="${STEPS_A:-20}"
averaging_a=(--set averaging.ema_decay=0.9 --set averaging.swa_start=0.5 --set averaging.lawa_k=2
  --set averaging.lawa_every=5 --set train.save_every=10)
for run in gpu cpu; do
  device="$([ $run == gpu ] && echo "$gpu" || echo cpu)"
  log "a: tiny-mixtral QLoRA $steps_a steps, fp32, $device"
  rm -rf "$work/a-$run"
  start=$SECONDS
  mixtune train --recipe recipes/quickstart.yaml --set model.device=$device --set model.compute_dtype=fp32 \
    --set lora.dropout=0.0 --set train.max_steps=$steps_a --set train.eval_every=0 ${averaging_a[@]} \
    --set output_dir="$work/a-$run" > "$work/a-$run.log" 2>&1 || tail -n 20 "$work/a-$run.log" >&2
  echo $((SECONDS - start)) > "$work/a-$run.time"
done
a_result="$(python3 - "$work/a-gpu/metrics.jsonl" "$work/a-cpu/metrics.jsonl" <<'PY'
import json, sys
def losses(path):
    try:
        return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r and "step" in r}
    except OSError:
        return {}
gpu, cpu = losses(sys.argv[1]), losses(sys.argv[2])
steps = sorted(set(gpu) & set(cpu))
if not steps or len(steps) != len(cpu) or len(steps) != len(gpu):
    print(f"MISS steps gpu {len(gpu)} cpu {len(cpu)}")
else:
    worst = max(abs(gpu[s] - cpu[s]) / abs(cpu[s]) for s in steps)
    print(f"{'ok' if worst < 1e-3 else 'MISS'} {len(steps)} steps, loss {cpu[steps[0]]:.4f} -> {cpu[steps[-1]]:.4f}, "
          f"worst relative difference {worst:.2e}")
PY
)"
[[ "$a_result" == ok* ]] || misses=$((misses + 1))
log "a: the GPU run again from its step-10 checkpoint"
rm -rf "$work/a-gpu-first" && mkdir -p "$work/a-gpu-first"
cp -r "$work"/a-gpu/adapter* "$work/a-gpu-first/" 2>/dev/null
mixtune train --recipe recipes/quickstart.yaml --set model.device="$gpu" --set model.compute_dtype=fp32 \
  --set lora.dropout=0.0 --set train.max_steps=$steps_a --set train.eval_every=0 ${averaging_a[@]} \
  --set output_dir="$work/a-gpu" --resume "$work/a-gpu/checkpoints/step-000010" > "$work/a-gpu-resumed.log" 2>&1 \
  || tail -n 20 "$work/a-gpu-resumed.log" >&2
# adapters A and B (directories holding adapter/, adapter-ema/, ...) -> the worst relative difference of any tensor
adapters_differ() { python3 - "$@" <<'PY'
import json, struct, sys
from array import array
def tensors(path):
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name != "__metadata__" and t["dtype"] == "F32":
            out[name] = array("f", data[t["data_offsets"][0]:t["data_offsets"][1]])
    return out
first, second, worst = sys.argv[1], sys.argv[2], 0.0
for name in sys.argv[3:]:
    try:
        a, b = tensors(f"{first}/{name}/adapter_model.safetensors"), tensors(f"{second}/{name}/adapter_model.safetensors")
    except OSError as e:
        print(f"MISS {name}: {e}"); sys.exit()
    if a.keys() != b.keys():
        print(f"MISS {name}: different tensors"); sys.exit()
    for key in a:
        scale = max(max(abs(v) for v in a[key]), 1e-30)
        worst = max(worst, max(abs(x - y) for x, y in zip(a[key], b[key])) / scale)
print(f"{worst:.2e}")
PY
}
averages_gpu_cpu="$(adapters_differ "$work/a-gpu-first" "$work/a-cpu" adapter-ema adapter-swa adapter-lawa)"
resumed_gpu="$(adapters_differ "$work/a-gpu-first" "$work/a-gpu" adapter adapter-ema adapter-swa adapter-lawa)"
a_averages="averages GPU vs CPU: worst $averages_gpu_cpu; GPU resumed at 10 vs not: worst $resumed_gpu"
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 1e-3 and float(sys.argv[2]) < 1e-5 else 1)' \
  "$averages_gpu_cpu" "$resumed_gpu" 2>/dev/null || { misses=$((misses + 1)); a_averages="MISS $a_averages"; }
row "a: $steps_a QLoRA steps GPU vs CPU, fp32" "$(cat "$work/a-gpu.time" 2>/dev/null)s GPU" \
  "$(cat "$work/a-cpu.time" 2>/dev/null)s CPU" "$a_result"
row "a: weight averages, checkpoint and resume" "EMA, SWA, LaWA k 2" "checkpoint at 10" "$a_averages"

# --- b. DPO and generate on the GPU -------------------------------------------------------------------------------
log "b: DPO (quickstart-dpo, 1 step a stage) and generate on the GPU"
rm -rf "$work/b-dpo"
mixtune train --recipe recipes/quickstart-dpo.yaml --set model.device="$gpu" --set train.max_steps=1 \
  --set output_dir="$work/b-dpo" > "$work/b-dpo.log" 2>&1; dpo_rc=$?
[ $dpo_rc -eq 0 ] || { misses=$((misses + 1)); tail -n 20 "$work/b-dpo.log" >&2; }
row "b: DPO step on the GPU" "exit $dpo_rc" "" "$(grep -m 1 '^stage 1:' "$work/b-dpo.log" | cut -c1-60)"
for run in gpu cpu; do
  device="$([ $run == gpu ] && echo "$gpu" || echo cpu)"
  mixtune generate --model "$work/a-gpu/base-model" --adapter "$work/a-gpu/adapter" --quantize nf4 \
    --prompt "Tell me about rivers." --max-new-tokens 8 --device $device --output-ids > "$work/b-gen-$run.txt" 2>&1
  echo "exit $?" >> "$work/b-gen-$run.txt"
done
gen_gpu="$(tail -n 2 "$work/b-gen-gpu.txt" | head -n 1)"; gen_cpu="$(tail -n 2 "$work/b-gen-cpu.txt" | head -n 1)"
[[ "$(tail -n 1 "$work/b-gen-gpu.txt")" == "exit 0" ]] || { misses=$((misses + 1)); cat "$work/b-gen-gpu.txt" >&2; }
row "b: generate, NF4 + adapter, greedy" "gpu $gen_gpu" "cpu $gen_cpu" \
  "$([ "$gen_gpu" == "$gen_cpu" ] && echo 'same ids' || echo 'ids differ (fp32 rounding may flip a near tie)')"

# --- c. one QLoRA step of the 7B shapes and of the 8x7B shapes: memory against the plan ----------------------------
peak_while() { # peak_while OUT_FILE command...: runs the command, sampling nvidia-smi; prints the peak MiB used
  local out="$1"; shift
  local base; base="$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)"
  "$@" > "$out" 2>&1 &
  local pid=$! peak=0 used
  while kill -0 $pid 2>/dev/null; do
    used="$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)"
    [ "$used" -gt "$peak" ] && peak=$used
    sleep 0.1
  done
  wait $pid; local rc=$?
  echo "$((peak - base)) $rc"
}
if [ "${SKIP_C:-0}" != 1 ]; then
  for case in "mistral-7b ${LAYERS_7B:-4} recipes/mistral-7b-qlora-sft.yaml" \
              "mixtral-8x7b ${LAYERS_MIXTRAL:-2} recipes/mixtral-8x7b-qlora-sft.yaml"; do
    read -r preset layers recipe <<< "$case"
    if ! time_for "${C_CASE_S:-240}"; then
      row "c: $preset ($layers layers), 3 QLoRA steps" "skipped" "" "MISS: under ${C_CASE_S:-240} s of BUDGET_S left"
      misses=$((misses + 1)); continue
    fi
    dir="$work/$preset-$layers"
    log "c: $preset with $layers layers: init-model, plan, 3 QLoRA steps"
    [ -f "$dir/config.json" ] || mixtune init-model --preset "$preset" --layers "$layers" --out "$dir" >&2
    sets=(--set model.path="$dir" --set model.device=gpu --set model.compute_dtype=fp16 --set train.max_steps=3
          --set train.micro_batch_size=1 --set train.gradient_accumulation=1 --set data.validation_ratio=0.0
          --set data.packing=true --set train.save_every=0 --set output_dir="$work/c-$preset")
    plan_gib="$(mixtune plan --recipe "$recipe" "${sets[@]}" | awk '/^total +[0-9]/ {print $2; exit}')"
    rm -rf "$work/c-$preset"
    read -r peak_mib rc < <(peak_while "$work/c-$preset.log" "$java_bin" -Dai.djl.offline=true -cp "$classpath" \
      io.mixtune.trainer.cli.Mixtune train --recipe "$recipe" "${sets[@]}")
    tps="$(last_metric "$work/c-$preset/metrics.jsonl" tokens_per_second 2>/dev/null)"
    verdict="$(python3 -c 'import sys
plan, peak, rc = float(sys.argv[1] or "nan"), float(sys.argv[2]) / 1024, int(sys.argv[3])
err = (peak - plan) / plan if plan == plan and plan > 0 else float("nan")
ok = rc == 0 and abs(err) <= 0.10
print(("ok" if ok else "MISS") + f" error {err:+.1%}" + ("" if rc == 0 else f", train exit {rc}"))' \
      "$plan_gib" "$peak_mib" "$rc")"
    [[ "$verdict" == ok* ]] || { misses=$((misses + 1)); tail -n 20 "$work/c-$preset.log" >&2; }
    row "c: $preset ($layers layers), 3 QLoRA steps" "peak $(awk -v m="$peak_mib" 'BEGIN{printf "%.2f", m/1024}') GiB" \
      "plan ${plan_gib} GiB" "$verdict, $(printf '%.0f' "${tps:-0}") tokens/s"
  done
fi

echo
printf '%-44s %-26s %-26s %s\n' "check" "measured" "against" "verdict"
printf '%s\n' "${table[@]}"
echo "misses: $misses (work files in $work)"
[ $misses -eq 0 ]
