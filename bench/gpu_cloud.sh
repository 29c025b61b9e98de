#!/usr/bin/env bash
# The receiver's batched decode on a rented GPU (no broker there: RTF rows only), with the
# machine's own python3 + torch; wheels in .whl/ (soundfile, paho-mqtt) installed first.
#   bash bench/gpu_cloud.sh      -> $OUT/cloud_gpu.md (+ .png)
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
source "$(dirname "$0")/../train/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY bench/bench_cloud.py --streams 1 --gpu-streams 1,64,256,512,1024,2048 --latency-seconds 0 \
    --out "$OUT/cloud_gpu.md" "$@"
