#!/usr/bin/env bash
# Every GPU check and benchmark of the project, in one run on a lent GPU machine.
#
#   bash bench/gpu_check.sh            (OUT=<folder for results>, default ./gpu_out)
#
# Expects (carried next to the repo, all git-ignored):
#   .whl/                        cp312 wheels the GPU image lacks (ROS 2 runtime wheels, pytorch-msssim)
#   .gpu/train_data/             the training split, packed by bench/pack_train_data.py
#   .gpu/mamba_ssm-2.3.2.post1/  mamba-ssm's sdist with csrc/selective_scan (the peer kernel, built here)
# Order = priority within one 10-minute call: correctness, training, then benchmarks.
# bench/gpu_kernels.sh is the longer kernel-only run (SASS report, tile variants).
# Each step is time-boxed and logged; a failing step never stops the next one.
# Results: $OUT/summary.md, $OUT/tiny.safetensors (trained weights) and $OUT/results.tgz (every log,
# table and JSON), refreshed after each step so a run cut short still returns what it did.
set -u
FINAL=${OUT:-$PWD/gpu_out}
OUT=/tmp/gpu_results
mkdir -p "$FINAL" "$OUT"
export PYTHONUNBUFFERED=1 ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-23}
TRAIN_MINUTES=${TRAIN_MINUTES:-3.5}
MAMBA_SRC=.gpu/mamba_ssm-2.3.2.post1
START=$(date +%s)
SUMMARY="$OUT/summary.md"
echo "# GPU check $(date -u +%FT%TZ)" > "$SUMMARY"

pack() {  # the device returns at most 8 files: one archive + summary + weights
  tar czf "$FINAL/results.tgz" -C "$(dirname "$OUT")" "$(basename "$OUT")" 2>/dev/null
  cp "$SUMMARY" "$FINAL/summary.md"
  [ -f "$OUT/weights/tiny.safetensors" ] && cp "$OUT/weights/tiny.safetensors" "$FINAL/tiny.safetensors"
  return 0
}

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "=== [$name] start (t=$((t0 - START))s, limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== [$name] rc=$rc in $(( $(date +%s) - t0 ))s"
  echo "- $name: rc=$rc, $(( $(date +%s) - t0 )) s" >> "$SUMMARY"
  tail -n 25 "$OUT/$name.log"
  pack
  return 0
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

# 1. Environment: carried wheels into the image's Python (its .pth hooks must run), and this repo
#    on PYTHONPATH under its import names (kernels/ -> diffmf_kernels, training/ -> diffmf_training).
PY=${PY:-python3}
setup_env() {
  $PY -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || echo "wheel install failed"
  mkdir -p /tmp/pylinks &&
  ln -sfn "$PWD/diffmf_core" /tmp/pylinks/diffmf_core && ln -sfn "$PWD/diffmf_ros" /tmp/pylinks/diffmf_ros &&
  ln -sfn "$PWD/kernels" /tmp/pylinks/diffmf_kernels && ln -sfn "$PWD/training" /tmp/pylinks/diffmf_training &&
  PYTHONPATH=/tmp/pylinks $PY -c "import diffmf_core, diffmf_kernels, diffmf_training, rclpy, sensor_msgs.msg, pytorch_msssim; print('env ok')"
}
export PYTHONPATH=/tmp/pylinks${PYTHONPATH:+:$PYTHONPATH}
step env 180 bash -c "PY=$PY; $(declare -f setup_env); setup_env"

# 2. The peer kernel builds in the background while the GPU is busy with our own work.
if [ -d "$MAMBA_SRC" ]; then
  (timeout 420 $PY bench/build_mamba_scan.py "$MAMBA_SRC" --build-dir /tmp/mamba_build --arch 90 --jobs 12 \
     > "$OUT/mamba_build.log" 2>&1; echo "rc=$?" >> "$OUT/mamba_build.log") &
  MAMBA_PID=$!
fi

# 3. Correctness on the GPU: kernels against the float64 reference, engine on CUDA.
step gpu_tests 130 $PY -m pytest -q -rA -m gpu -o addopts="" -p no:cacheprovider tests/test_kernels_triton.py tests/test_engine.py tests/test_training_gpu.py

# 4. Train the tiny preset for the shipped weights (issue 7) on the packed training split.
step train $(python3 -c "print(int($TRAIN_MINUTES * 60 + 60))") $PY -m diffmf_training.train --no-progress \
  --opt training/options/DIFFMF/DIFFMF_tiny_shared.json --set path.root=/tmp/train \
  --set 'datasets.train.dataroot=[".gpu/train_data/RoadScene", ".gpu/train_data/MSRS", ".gpu/train_data/TNO"]' \
  --set train.max_minutes=$TRAIN_MINUTES
mkdir -p "$OUT/weights"
last=$(ls -1 /tmp/train/DIFFMF_tiny_shared/models/*_E.safetensors 2>/dev/null | sort -V | tail -n 1)
[ -n "$last" ] && cp "$last" "$OUT/weights/tiny.safetensors" && echo "- weights: $(basename "$last")" >> "$SUMMARY"
cp /tmp/train/DIFFMF_tiny_shared/train.log "$OUT/train_full.log" 2>/dev/null
pack

# 5. Benchmarks: scan kernels (with the mamba-ssm peer when it built), model, node.
if [ -n "${MAMBA_PID:-}" ]; then wait "$MAMBA_PID"; tail -n 3 "$OUT/mamba_build.log"; fi
MAMBA_ARGS=()
compgen -G "/tmp/mamba_build/selective_scan_cuda*.so" > /dev/null && MAMBA_ARGS=(--mamba-module /tmp/mamba_build)
step bench_scan 100 $PY bench/scan.py --out "$OUT" --sizes 512x640 256x320 \
  --triton-config forward=tiles --triton-config chunk=256 ${MAMBA_ARGS[@]+"${MAMBA_ARGS[@]}"}
step bench_model 75 $PY bench/model.py --presets tiny base --out "$OUT" --repeat 20 --budget 2 --scaling 256 512 1024
if [ -f bench/node_latency.py ]; then
  step bench_node 60 $PY bench/node_latency.py --out "$OUT" --frames 60 --seconds 3
fi

echo "total $(( $(date +%s) - START )) s" | tee -a "$SUMMARY"
pack
cat "$OUT"/*.md 2>/dev/null | tail -n 80
