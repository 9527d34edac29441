#!/usr/bin/env bash
# The second short GPU session: can the machine's CPUs feed its GPU? The data pipeline with every core
# (one clip and two clips per opened video), then train() itself on TSM-50 with real data workers
# (data-wait share per step in its log). Usage on a CUDA machine, from the repository root:
#   OUT=/tmp/gpu bash benchmarks/gpu_data_check.sh
set -u
OUT=${OUT:-/tmp/mmv_gpu}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
WORKERS=${WORKERS:-$(( $(nproc) - 2 ))}
$PY benchmarks/bench_data.py --write-set "$OUT/benchset" > "$OUT/benchset.txt" 2>&1
for K in 1 2; do
  timeout 150 $PY -m mmv_torch data bench "$OUT/benchset/manifest.jsonl" --workers "$WORKERS" --seconds 30 \
      --augment-on batch --clips-per-video "$K" --json "$OUT/data_k$K.json" 2>&1 | tee "$OUT/data_k$K.txt"
done
timeout 280 $PY benchmarks/bench_train.py --device cuda --presets mmv_tsm_r50 --modes loop --num-workers "$WORKERS" \
    --batch-size 32 --bf16 on --channels-last on --steps 10 --warmup 3 --timeout 250 \
    --json "$OUT/loop.json" 2>&1 | tee "$OUT/loop.txt"
