#!/usr/bin/env bash
# The edge agent proven on arm64: a Debian bookworm arm64 root under qemu-user, the agent
# installed there by docs/edge.md's own commands, streaming to this host's mosquitto.
#   edge/arm64/check.sh                       full check; report -> bench/results/arm64.md
#   edge/arm64/check.sh --reuse-device --seconds 3 --no-report   quick rerun (the CI test)
# Needs root (debootstrap, chroot, binfmt_misc; proot is the fallback without binfmt) and
# the Debian and PyPI registries. Cache: $GACFLOW_ARM64_CACHE (default ~/.cache/gacflow-arm64).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${GACFLOW_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || ./run setup
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v proot >/dev/null || need+=(proot)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ ${#need[@]} -gt 0 ]; then
  echo "[arm64] installing host tools: ${need[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive nice -n 10 apt-get install -y -qq "${need[@]}" >/dev/null
fi
exec nice -n 10 "$VENV/bin/python" edge/arm64/check.py "$@"
