#!/usr/bin/env bash
# Early exit on a GPU as a user meets it: train the quickstart (loss=de3, so every rule applies)
# with trainer=gpu, sweep its thresholds in the precision it deploys in, then time real early
# exit at batch 1 and 32 against the plain Hugging Face model (benchmarks/early_exit_latency.py).
# About 3 minutes of an H200. On the device machine, from the project root:
#
#   here:  bash ../shared/device-kit/pack.sh
#   there: (device tool, carry [".device-kit"])  bash benchmarks/gpu_early_exit.sh
#
# Results go to $OUT (the device tool's folder; default benchmarks/latency): gpu-fp32.{json,md},
# gpu-bf16.{json,md}, the run's thresholds.json and results.json. The same script runs on a CPU
# with smaller settings, which is how tests/test_benchmark_scripts.py checks it:
#   DEVICE=cpu TRAIN="backbone=tiny_bert debug=fast" SWEEP=trainer=cpu SAMPLES=8 ROUNDS=1 OUT=/tmp/x \
#       bash benchmarks/gpu_early_exit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .device-kit/setup.sh ]; then source .device-kit/setup.sh; fi
DEVICE="${DEVICE:-cuda}"
TRAIN="${TRAIN:-experiment=quickstart trainer=gpu}"
SWEEP="${SWEEP:-trainer=gpu}"  # the re-sweep's exit cache on the device predict runs on
SAMPLES="${SAMPLES:-256}"
ROUNDS="${ROUNDS:-5}"
OUT="${OUT:-benchmarks/latency}"
RUN="$(mktemp -d)/run"
mkdir -p "$OUT"

# shellcheck disable=SC2086  # TRAIN holds several overrides
python3 run.py $TRAIN loss=de3 logger=csv exit.precision=fp32 hydra.run.dir="$RUN"
cp "$RUN/thresholds.json" "$OUT/thresholds-fp32.json"
cp "$RUN/results.json" "$OUT/results.json"
python3 -m benchmarks.early_exit_latency --run-dir "$RUN" --device "$DEVICE" --precision fp32 \
    --samples "$SAMPLES" --rounds "$ROUNDS" --threads 1 --out "$OUT/gpu-fp32"

# thresholds mean their speed-up only in the precision their sweep ran in: sweep again in bf16
# shellcheck disable=SC2086
python3 run.py mode=sweep run_dir="$RUN" $SWEEP logger=csv exit.precision=bf16 hydra.run.dir="$RUN-bf16"
cp "$RUN-bf16/thresholds.json" "$OUT/thresholds-bf16.json"
python3 -m benchmarks.early_exit_latency --run-dir "$RUN-bf16" --device "$DEVICE" --precision bf16 \
    --samples "$SAMPLES" --rounds "$ROUNDS" --threads 1 --out "$OUT/gpu-bf16"
