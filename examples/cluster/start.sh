#!/usr/bin/env bash
# A local fleet deployment: 3 RabbitMQ nodes on loopback ports, an MQTT balancer on
# :1883 for the devices, N receiver workers (default 2). Ctrl-C stops everything.
#   examples/cluster/start.sh [WORKERS] [OUT]
# Then stream to it, e.g.: gacflow-edge --broker mqtt://127.0.0.1:1883 --device-id d1 --input talk.wav
# Consoles: http://127.0.0.1:9200/console (worker 0), :9201 (worker 1), ...
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${GACFLOW_VENV:-.venv}/bin/python"
exec "$PY" -m gacflow.cloud.cluster up --workers "${1:-2}" --out "${2:-fleet-out}" \
  --mqtt-port "${GACFLOW_MQTT_PORT:-1883}" --metrics-port "${GACFLOW_METRICS_PORT:-9200}"
