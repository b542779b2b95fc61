#!/usr/bin/env bash
# The GPU benchmark, one run on a GPU machine (a few minutes on an H100-class GPU):
#   1. the CUDA-only fast-path tests (CUDA graphs equal eager in fp32: given masks, select, select_and_forward with
#      the controller overlapped; batch 1 and mixed batches);
#   2. paper preset, batch 1: the fast path per budget, bf16 (and fp32 at the end), scripts/fastpath_variants.py;
#   3. paper preset, bf16: GPU time of each phase of a budget-6 inference alone, scripts/gpu_phases.py;
#   4. paper preset: eager fp32 vs fast path bf16 (CUDA graphs), budgets 6 8 12 16 24 at batch 1, the controller
#      alone, the fixed + per-block fit, and allocation-grouped batching of 16 samples (4 distinct allocations);
#   5. tiny preset, fast path in fp32 (a numerics check of the graphs: the |fast-eager| column).
# Usage (repo root): OUT=bench-gpu scripts/gpu_bench.sh   — writes $OUT/bench.txt (everything printed) and JSONs.
set -uo pipefail
OUT=${OUT:-bench-gpu}
PY=${PYTHON:-python3}
REPEATS=${REPEATS:-30}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # scripts/*.py import admn_core from the checkout
LOG="$OUT/bench.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$LOG"
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name(0))" \
    2>&1 | tee -a "$LOG"
timeout 150 $PY -m pytest -q -p no:cacheprovider test/test_fastpath.py 2>&1 | tail -15 \
    | tee -a "$LOG"
timeout 120 $PY scripts/fastpath_variants.py --preset paper --device cuda --dtype bfloat16 --repeats 40 \
    --json "$OUT/variants_bf16.json" 2>&1 | tee -a "$LOG"
timeout 120 $PY scripts/gpu_phases.py --preset paper --dtype bfloat16 --budget 6 --json "$OUT/phases.json" 2>&1 \
    | tee -a "$LOG"
timeout 240 $PY -m admn_core.cli bench --presets paper --device cuda --dtype float32 --fast --fast-dtype bfloat16 \
    --repeats "$REPEATS" --budgets 6 8 12 16 24 --batch 16 --distinct 4 --throughput-repeats 5 \
    --json "$OUT/paper.json" 2>&1 | tee -a "$LOG"
timeout 120 $PY -m admn_core.cli bench --presets tiny --device cuda --dtype float32 --fast --budgets 6 8 12 16 24 \
    --repeats 30 --batch 16 --json "$OUT/tiny.json" 2>&1 | tee -a "$LOG"
timeout 90 $PY scripts/fastpath_variants.py --preset paper --device cuda --dtype float32 --repeats 20 \
    --json "$OUT/variants_fp32.json" 2>&1 | tee -a "$LOG"
exit 0
