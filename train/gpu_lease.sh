#!/usr/bin/env bash
# One time-boxed GPU lease: train several configs side by side on one GPU, each a first
# stage (encoder + small decoder) then its `_large` stage (adversarial large decoder),
# and leave slim weights and logs in $OUT (default out/lease) to bring back.
#   bash train/gpu_lease.sh gpu_semantic gpu_recorded
# Runs with the machine's own python3 (PyTorch already there); wheels in .whl/ (soundfile
# for the Opus corpus) are installed first when present. No network needed. Exit 1 when
# a stage left no weights (its log in logs.tar.gz says why).
set -u
CONFIGS=${CONFIGS:-train/configs}  # where CFG.toml and CFG_large.toml are
RUNS=${RUNS:-runs}  # run folders (checkpoints, logs)
OUT=${OUT:-out/lease}
mkdir -p "$OUT" "$RUNS"
PY=${PYTHON:-python3}
source "$(dirname "$0")/device_env.sh"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
# MINUTES (optional) overrides each stage's max_minutes, e.g. for a short rehearsal on CPU
train() { $PY -m gacflow.train.cli fit --config "$CONFIGS/$1.toml" --run "$RUNS/${1//_/-}" \
            ${MINUTES:+--max-minutes $MINUTES}; }
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader 2>/dev/null
for cfg in "$@"; do
  data=$($PY -c "from gacflow.train.config import TrainConfig as T; print(T.load('$CONFIGS/$cfg.toml').data)")
  $PY -c "from pathlib import Path; from gacflow.train.compact import unpack_if_needed as u; u(Path('$data'), 12)"
done
slim() { $PY -m gacflow.train.cli slim "$RUNS/${1//_/-}/ckpt.pt" --out "$OUT/$1.pt" "${@:2}"; }
for cfg in "$@"; do  # each stage's weights are slimmed as soon as it ends
  (train "$cfg" > "$OUT/$cfg.log" 2>&1 && slim "$cfg" && \
   train "${cfg}_large" > "$OUT/${cfg}_large.log" 2>&1 && slim "${cfg}_large" --decoder-only --discriminators) &
done
wait
logs=()
for cfg in "$@"; do
  run=$RUNS/${cfg//_/-}
  cp "$run/log.jsonl" "$OUT/$cfg.jsonl" 2>/dev/null
  cp "$run-large/log.jsonl" "$OUT/${cfg}_large.jsonl" 2>/dev/null
  logs+=("$cfg.log" "${cfg}_large.log" "$cfg.jsonl" "${cfg}_large.jsonl")
done
(cd "$OUT" && tar czf logs.tar.gz --ignore-failed-read "${logs[@]}" 2>/dev/null; rm -f "${logs[@]}")
ls -la "$OUT"
for cfg in "$@"; do  # a stage that failed left no weights: say so in the exit status
  [ -f "$OUT/$cfg.pt" ] && [ -f "$OUT/${cfg}_large.pt" ] || { echo "lease: $cfg incomplete" >&2; exit 1; }
done
