#!/usr/bin/env bash
# Every GPU check and benchmark of the project, in one run on a lent GPU machine.
#
#   bash bench/gpu_check.sh            (OUT=<folder for results>, default ./gpu_out)
#   STEPS="tests scan mamba model" bash bench/gpu_check.sh      (the default set; add node, train)
#
# Expects (carried next to the repo, all git-ignored):
#   .whl/                        cp312 wheels the GPU image lacks (ROS 2 runtime wheels, pytorch-msssim)
#   .gpu/mamba_ssm-2.3.2.post1/  mamba-ssm's sdist with csrc/selective_scan (the peer kernel, built here)
#   .gpu/train_data/             the training split, packed by bench/pack_train_data.py (step train only)
# Steps (each time-boxed and logged; a failing step never stops the next one). Run order: tests; the token-major
# scan and the model's default and token-major timings (the open layout question first); the scan sweep; the
# variants' tests; the small scans and ncu; mamba; the model's variants; node; train. By step:
#   tests  pytest -m gpu: Triton kernels and the engine vs the float64 reference (grad_forward=reorder included),
#          then (after the scan step) the untimed forward variants (tiles_rows, tiles_prefetch, tiles_fold,
#          tiles_maxnreg); the older variants' own tests last, if time is left
#   scan   (its variants compiled first in parallel processes, during the tests) first the forward on token-major
#          u and delta (read in place) beside channel-major at 640x512 and the tiny model's 160x128; then
#          bench/scan.py at 640x512 bf16: default and every variant in SCAN_VARIANTS, forward and backward,
#          at SCAN_SIZES (default also the rows-only and cols-only splits, and 320x256), per-kernel GPU time
#          (torch.profiler); ncu's sections if ncu exists and the registers and spills of every Triton kernel as
#          the JIT compiled it there
#   mamba  (after its background build) the mamba backend's gpu tests, and it beside ours in bench/scan.py
#   model  bench/model.py tiny at 320x256 / 640x512 for the default scan (and the scan's share of a frame's
#          GPU time) and laid out token-major (DIFFMF_SCAN_LAYOUT=token_major; tiles_tm_loads lanes and vector),
#          before the scan sweep; after it the sweep's fastest scan variant, each MODEL_VARIANTS entry, and mamba
#   node   bench/node_latency.py (ROS 2 across processes)
#   train  the tiny preset on the packed split for TRAIN_MINUTES
# Results: $OUT/summary.md, $OUT/results.tgz (every log, table and JSON) and, after train,
# $OUT/tiny.safetensors; refreshed after each step so a run cut short still returns what it did.
set -u
FINAL=${OUT:-$PWD/gpu_out}
OUT=/tmp/gpu_results
mkdir -p "$FINAL" "$OUT"
export PYTHONUNBUFFERED=1 ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-23}
STEPS=" ${STEPS:-tests scan mamba model} "
TRAIN_MINUTES=${TRAIN_MINUTES:-3.5}
MAMBA_SRC=.gpu/mamba_ssm-2.3.2.post1
MAMBA_BUILD=/tmp/mamba_build
# Variants (ScanConfig overrides on the problem's default) timed beside the default, forward and
# backward (empty: none); the leases of 2026-11-26 swept the others (bench/RESULTS.md).
SCAN_VARIANTS=${SCAN_VARIANTS-"tiles_fold=2,tiles_prefetch=1 tiles_prefetch=1 tiles_fold=2 tiles_fold=1
  tiles_fold=2,tiles_prefetch=1,tiles_maxnreg=128 tiles_rows=contiguous,tiles_fold=2,tiles_prefetch=1
  tiles_rows=contiguous tiles_maxnreg=128 grad_forward=reorder,rows_gt=64,rows_warps=2
  grad_forward=reorder,rows_gt=256,rows_warps=8 grad_forward=reorder,rows_gt=32"}
SCAN_SIZES=${SCAN_SIZES-"512x640 512x640:4:64:rows 512x640:4:64:cols 256x320"}
SCAN_SMALL=${SCAN_SMALL-"128x160:4:32:n8 128x320:4:32:n8 40x32:4:64:n8"}  # the tiny model's scans at 640x512 (its
# commonest first: variants run there only); empty: skip
NCU=${NCU-1}  # Nsight Compute on the default forward (when ncu exists); 0: skip
MODEL_VARIANTS=${MODEL_VARIANTS-"tiles_fold=2,tiles_prefetch=1 tiles_fold=2 tiles_prefetch=1"}  # + the sweep's fastest forward; forward=auto took over 60 s to compile
MAX_SECONDS=${MAX_SECONDS:-560}  # one device call may run 600 s: optional steps stop before that
START=$(date +%s)
SUMMARY="$OUT/summary.md"
echo "# GPU check $(date -u +%FT%TZ), steps:$STEPS" > "$SUMMARY"
want() { [[ "$STEPS" == *" $1 "* ]]; }
fits() {  # fits NAME SECONDS: is there time left for a step that needs about SECONDS?
  if (( $(date +%s) - START + $2 > MAX_SECONDS )); then
    echo "- $1: skipped, $(( $(date +%s) - START )) s used of $MAX_SECONDS" >> "$SUMMARY"; return 1
  fi
}

pack() {  # the device returns at most 8 files: one archive + summary (+ weights)
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
  tail -n 30 "$OUT/$name.log"
  pack
  return 0
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
cat "$OUT/gpu.txt" >> "$SUMMARY"

# Environment: carried wheels into the image's Python (its .pth hooks must run), and this repo on
# PYTHONPATH under its import names (kernels/ -> diffmf_kernels, training/ -> diffmf_training).
PY=${PY:-python3}
setup_env() {
  $PY -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || echo "wheel install failed"
  mkdir -p /tmp/pylinks &&
  ln -sfn "$PWD/diffmf_core" /tmp/pylinks/diffmf_core && ln -sfn "$PWD/diffmf_ros" /tmp/pylinks/diffmf_ros &&
  ln -sfn "$PWD/kernels" /tmp/pylinks/diffmf_kernels && ln -sfn "$PWD/training" /tmp/pylinks/diffmf_training &&
  PYTHONPATH=/tmp/pylinks $PY -c "import diffmf_core, diffmf_kernels, diffmf_training, pytorch_msssim; print('env ok')"
}
export PYTHONPATH=/tmp/pylinks${PYTHONPATH:+:$PYTHONPATH}
step env 180 bash -c "PY=$PY; $(declare -f setup_env); setup_env"

# The peer kernel builds in the background while the GPU is busy with our own work (8 of the 16
# cores, so that Triton compiles and kernel launches keep some).
if want mamba && [ -d "$MAMBA_SRC" ]; then
  (timeout 420 $PY bench/build_mamba_scan.py "$MAMBA_SRC" --build-dir "$MAMBA_BUILD" --arch 90 --jobs 8 \
     > "$OUT/mamba_build.log" 2>&1; echo "rc=$?" >> "$OUT/mamba_build.log") &
  MAMBA_PID=$!
fi

# Triton compiles each scan variant once per process and caches it on disk; compiling them in
# parallel processes now (one variant each, a short run) keeps the timed sweep from waiting on it.
if want scan; then
  (
    i=0
    for v in "" $SCAN_VARIANTS; do
      while (( $(jobs -rp | wc -l) >= 6 )); do sleep 1; done
      (( $(date +%s) - START > 150 )) && break  # the rest compile in the sweep itself
      i=$((i + 1))
      if [ -z "$v" ]; then
        timeout 120 $PY bench/scan.py --out "/tmp/warm/$i" --sizes 512x640 --dtypes bf16 --repeat 1 &
      else
        timeout 120 $PY bench/scan.py --out "/tmp/warm/$i" --sizes 512x640 --dtypes bf16 --repeat 1 \
          --only-variants --triton-config "$v" &
      fi
    done
    wait
  ) > "$OUT/warm.log" 2>&1 &
  WARM_PID=$!
fi

if want tests; then  # the kernel variants' own tests run at the end, when time is left
  # -v: a step cut short by its limit still logs each test it finished
  step gpu_tests 150 $PY -m pytest -v -rA -m gpu -o addopts="" -p no:cacheprovider -k "not variants or reorder" \
    tests/test_kernels_triton.py tests/test_engine.py tests/test_scan_layout.py
fi

# First what decides the layout question (token-major on the GPU, untimed so far), so a short lease answers
# it: the scan both ways, then the model by default and token-major; the variant sweep after them.
if want scan; then  # nothing else on the GPU from here on: the warm-up compiles launch kernels too
  [ -n "${WARM_PID:-}" ] && wait "$WARM_PID"
  echo "- warm-up compile of the scan variants done at t=$(( $(date +%s) - START )) s" >> "$SUMMARY"
  # Token-major u and delta (a channels-last model's layout, read in place by the tiles forward; untimed so far)
  # beside the usual channel-major ones in one table, the benchmark's and the tiny model's commonest shape.
  fits bench_scan_token_major 60 && step bench_scan_token_major 150 $PY bench/scan.py --out "$OUT/scan_tm" \
    --sizes 512x640 512x640:tm 128x160:4:32:n8 128x160:4:32:n8:tm --dtypes bf16 --repeat 20 --no-backward \
    --triton-config tiles_tm_loads=vector --triton-config tiles_fold=2,tiles_prefetch=1 --triton-config tiles_fold=2
fi

if want model; then
  fits bench_model 60 && step bench_model 90 env DIFFMF_SCAN_BACKEND=triton $PY bench/model.py --presets tiny \
    --out "$OUT/model_default" --repeat 30 --budget 3 --scaling 512 --profile
  # The model laid out token-major (channels-last conv, u/delta/y read and written in place by the tiles forward)
  fits bench_model_tm 60 && step bench_model_tm 60 env DIFFMF_SCAN_BACKEND=triton DIFFMF_SCAN_LAYOUT=token_major \
    $PY bench/model.py --presets tiny --out "$OUT/model_token_major" --repeat 30 --budget 3 --scaling 512
  fits bench_model_tm_vector 60 && step bench_model_tm_vector 60 env DIFFMF_SCAN_BACKEND=triton \
    DIFFMF_SCAN_LAYOUT=token_major DIFFMF_TRITON_SCAN_CONFIG=tiles_tm_loads=vector $PY bench/model.py --presets tiny \
    --out "$OUT/model_token_major_vector" --repeat 30 --budget 3 --scaling 512
fi

if want scan; then
  variant_args=()
  for v in $SCAN_VARIANTS; do variant_args+=(--triton-config "$v"); done
  step bench_scan 260 $PY bench/scan.py --out "$OUT/scan" --sizes $SCAN_SIZES --dtypes bf16 --repeat 10 --profile \
    "${variant_args[@]}"
  # The model steps below time the fastest correct forward variant of this table too.
  BEST=$($PY - "$OUT/scan/scan_bench.json" <<'PYEOF' 2>/dev/null
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
full = [r for r in rows if r["problem"].startswith("512x640") and "only" not in r["problem"] and r["fwd_ms"]
        and r["backend"].startswith("triton[") and (r["max_rel_diff"] or 0) < 2e-2]
print(min(full, key=lambda r: r["fwd_ms"])["backend"][7:-1] if full else "")
PYEOF
)
  if [ -n "$BEST" ]; then
    echo "- fastest correct scan variant at 640x512: $BEST" >> "$SUMMARY"
    [[ " $MODEL_VARIANTS " == *" $BEST "* ]] || MODEL_VARIANTS="$BEST $MODEL_VARIANTS"
  fi
fi


# The untimed forward variants' own tests (every gradient too), after their timings: the table above already
# compares each variant's forward output with the default's (max rel diff).
if want tests && fits gpu_tests_new_variants 90; then
  step gpu_tests_new_variants 120 $PY -m pytest -v -rA -m gpu -o addopts="" -p no:cacheprovider \
    -k "variants and (contiguous or prefetch or maxnreg or fold or tm_loads) and not reorder" tests/test_kernels_triton.py
fi

if want scan; then
  # The tiny model's own scan shapes (N=8, 32-64 channels, 160x128-token maps and smaller at 640x512), with
  # the forward variants timed on the commonest:
  [ -n "$SCAN_SMALL" ] && fits bench_scan_small 40 && step bench_scan_small 60 $PY bench/scan.py \
    --out "$OUT/scan_small" --sizes $SCAN_SMALL --dtypes bf16 --repeat 20 --triton-config tiles_fold=2,tiles_prefetch=1 \
    --triton-config tiles_fold=2 --triton-config tiles_prefetch=1
  if [ "$NCU" = 1 ] && ! command -v ncu > /dev/null; then
    echo "- ncu: not on this machine" >> "$SUMMARY"
    NCU=0
  fi
fi

# Nsight Compute while the peer kernel still compiles on the CPU cores (it needs the GPU alone).
if want scan && [ "$NCU" = 1 ] && fits ncu 60; then  # the default forward's two kernels, after their warm-up launches
  step ncu 100 ncu --target-processes all --kernel-name regex:_fwd_ --launch-skip 2 --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
    $PY bench/scan.py --out "$OUT/ncu_scan" --sizes 512x640 --dtypes bf16 --repeat 1 --no-backward
fi

if want mamba && [ -n "${MAMBA_PID:-}" ]; then
  wait "$MAMBA_PID"
  tail -n 3 "$OUT/mamba_build.log"
  if compgen -G "$MAMBA_BUILD/selective_scan_cuda*.so" > /dev/null; then
    export DIFFMF_MAMBA_SCAN_MODULE=$MAMBA_BUILD
    fits mamba_tests 60 && step mamba_tests 120 $PY -m pytest -q -rA -m gpu -o addopts="" -p no:cacheprovider tests/test_kernels_mamba.py
    fits bench_scan_mamba 90 && step bench_scan_mamba 150 $PY bench/scan.py --out "$OUT/scan_mamba" --sizes 512x640 256x320 --dtypes bf16 \
      --mamba-module "$MAMBA_BUILD"
  else
    echo "- mamba: build failed (see mamba_build.log)" >> "$SUMMARY"
  fi
fi

if want model; then
  i=0
  for v in $MODEL_VARIANTS; do
    i=$((i + 1))
    fits "bench_model_v$i" 60 || continue
    step "bench_model_v$i" 60 env DIFFMF_SCAN_BACKEND=triton DIFFMF_TRITON_SCAN_CONFIG="$v" $PY bench/model.py \
      --presets tiny --out "$OUT/model_v$i" --repeat 30 --budget 3 --scaling 512
    echo "  (model_v$i = $v)" >> "$SUMMARY"
  done
  if [ -n "${DIFFMF_MAMBA_SCAN_MODULE:-}" ] && fits bench_model_mamba 60; then
    step bench_model_mamba 60 env DIFFMF_SCAN_BACKEND=mamba $PY bench/model.py --presets tiny \
      --out "$OUT/model_mamba" --repeat 30 --budget 3 --scaling 512
  fi
fi

if want tests && fits gpu_variant_tests 120; then
  step gpu_variant_tests 150 $PY -m pytest -v -rA -m gpu -o addopts="" -p no:cacheprovider \
    -k "variants and not (reorder or contiguous or prefetch or maxnreg or fold)" \
    tests/test_kernels_triton.py
fi


if want node && fits bench_node 90; then
  step bench_node 90 $PY bench/node_latency.py --out "$OUT/node" --frames 60 --seconds 3
fi

if want train && fits train $(python3 -c "print(int($TRAIN_MINUTES * 60 + 60))"); then
  step train $(python3 -c "print(int($TRAIN_MINUTES * 60 + 60))") $PY -m diffmf_training.train --no-progress \
    --opt training/options/DIFFMF/DIFFMF_tiny_shared.json --set path.root=/tmp/train \
    --set 'datasets.train.dataroot=[".gpu/train_data/RoadScene", ".gpu/train_data/MSRS", ".gpu/train_data/TNO"]' \
    --set train.max_minutes=$TRAIN_MINUTES
  mkdir -p "$OUT/weights"
  last=$(ls -1 /tmp/train/DIFFMF_tiny_shared/models/*_E.safetensors 2>/dev/null | sort -V | tail -n 1)
  [ -n "$last" ] && cp "$last" "$OUT/weights/tiny.safetensors" && echo "- weights: $(basename "$last")" >> "$SUMMARY"
  cp /tmp/train/DIFFMF_tiny_shared/train.log "$OUT/train_full.log" 2>/dev/null
fi

for f in "$OUT"/scan/scan_bench.md "$OUT"/scan_small/scan_bench.md "$OUT"/scan_mamba/scan_bench.md \
  "$OUT"/model_*/model.md; do
  [ -f "$f" ] && { echo; echo "## $f"; cat "$f"; } >> "$SUMMARY"
done
echo "total $(( $(date +%s) - START )) s" | tee -a "$SUMMARY"
pack
tail -n 120 "$SUMMARY"
