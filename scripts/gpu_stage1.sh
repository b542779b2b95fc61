#!/usr/bin/env bash
# Stage 1 of the lowlight world run on a GPU machine (config/train_tiny_gpu.yaml: 72 epochs), stopped after Stage 1;
# the Stage-1 model and its per-epoch metrics land under $OUT. Continue anywhere with the same config:
#   mkdir -p <out>/lowlight/stage1 && cp $OUT/stage1_model.safetensors <out>/lowlight/stage1/model.safetensors
#   admn train --train-config config/train_tiny_gpu.yaml --corruption lowlight --out <out>
# Usage (repo root): OUT=stage1-gpu LIMIT=300 scripts/gpu_stage1.sh
set -uo pipefail
OUT=${OUT:-stage1-gpu}
PY=${PYTHON:-python3}
LIMIT=${LIMIT:-300}
RUN=${RUN:-/tmp/admn-gpu-run}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
timeout "$LIMIT" $PY -m admn_core.cli train --train-config config/train_tiny_gpu.yaml --corruption lowlight \
    --out "$RUN" --device cuda --until stage1 > "$OUT/stage1.log" 2>&1
echo "train exit $?" | tee -a "$OUT/stage1.log"
tail -5 "$OUT/stage1.log"
cp "$RUN/lowlight/stage1/model.safetensors" "$OUT/stage1_model.safetensors" 2>/dev/null
cp "$RUN/lowlight/stage1/run/metrics.csv" "$OUT/stage1_metrics.csv" 2>/dev/null
cp "$RUN/lowlight/timings.json" "$OUT/stage1_timings.json" 2>/dev/null
# An unfinished run leaves its checkpoint (<run>/lowlight/stage1/run/checkpoint.safetensors): bring it back to
# resume elsewhere (the same command without --device resumes from it).
[ ! -f "$OUT/stage1_model.safetensors" ] && cp "$RUN/lowlight/stage1/run/checkpoint.safetensors" "$OUT/" 2>/dev/null
exit 0
