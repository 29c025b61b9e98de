#!/usr/bin/env bash
# The receiver's batched decode on a rented GPU (no broker there: RTF rows only), with the
# machine's own python3 + torch; wheels in .whl/ (soundfile, paho-mqtt) installed first.
#   bash bench/gpu_cloud.sh      -> $OUT/cloud_gpu.md (+ .png)
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
source train/package_path.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY bench/bench_cloud.py --streams 1 --gpu-streams 1,64,256,512,1024,2048 --latency-seconds 0 \
    --out "$OUT/cloud_gpu.md" "$@"
