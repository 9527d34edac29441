#!/usr/bin/env bash
# One short GPU session: tower speed/memory (bench_models) and training-step throughput (bench_train)
# for the paper presets. Usage on a CUDA machine, from the repository root:
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/mmv_gpu}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
timeout 200 $PY benchmarks/bench_models.py --device cuda --presets mmv_s3d mmv_tsm_r50 mmv_tsm_r50x2 va_r2plus1d_18 \
    --towers video audio --repeats 5 --in-process --json "$OUT/models.json" 2>&1 | tee "$OUT/models.txt"
timeout 240 $PY benchmarks/bench_train.py --device cuda --presets tiny mmv_s3d mmv_tsm_r50 mmv_tsm_r50x2 \
    --modes step --bf16 both --channels-last on --steps 10 --warmup 3 --timeout 60 \
    --json "$OUT/train.json" 2>&1 | tee "$OUT/train.txt"
