#!/usr/bin/env bash
# The prepared GPU benchmark (issue 7): paper preset, eager fp32 vs fast path bf16 (CUDA graphs), budgets
# 6 8 12 16 24 at batch 1, plus allocation-grouped batching of 16 samples (4 distinct allocations); then the
# tiny preset with the fast path in fp32 as a numerics check of the graphs (|fast-eager| column).
# Usage (repo root): OUT=bench-gpu scripts/gpu_bench.sh   — writes JSON + text tables under $OUT.
set -uo pipefail
OUT=${OUT:-bench-gpu}
PY=${PYTHON:-python3}
REPEATS=${REPEATS:-50}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name(0))" \
    2>&1 | tee -a "$OUT/gpu.txt"
paper() {
    $PY -m admn_core.cli bench --presets paper --device cuda --dtype float32 --fast --fast-dtype bfloat16 \
        --budgets 6 8 12 16 24 --repeats "$REPEATS" --batch 16 --distinct 4 --throughput-repeats 5 \
        --json "$OUT/paper.json" 2>&1 | tee "$OUT/paper.txt"
}
if ! paper; then
    echo "graph fast path failed; rerunning with ADMN_FASTPATH_GRAPHS=0 (lean bf16 without graphs)"
    ADMN_FASTPATH_GRAPHS=0 paper
fi
timeout 120 $PY -m admn_core.cli bench --presets tiny --device cuda --dtype float32 --fast --budgets 6 8 12 16 24 \
    --repeats 30 --batch 16 --json "$OUT/tiny.json" 2>&1 | tee "$OUT/tiny.txt"
exit 0
