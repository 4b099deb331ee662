#!/usr/bin/env bash
# Start the Prefect server and UI for a workspace, bound to 127.0.0.1 (override with HOST=...).
# Runs started afterwards on the same workspace report to it automatically: the URL is written
# to <workspace>/.prefect/api_url, which psft-run reads.  Usage: make ui [WORKSPACE=dir PORT=4200]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ws=$(realpath -m "${WORKSPACE:-${PSFT_WORKSPACE:-results}}")
port=${PORT:-4200}
host=${HOST:-127.0.0.1}
mkdir -p "$ws/.prefect"
export PREFECT_HOME="$ws/.prefect"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_UI_API_URL="http://$host:$port/api"  # the UI otherwise assumes port 4200
echo "http://$host:$port/api" > "$ws/.prefect/api_url"
trap 'rm -f "$ws/.prefect/api_url"' EXIT
echo "Prefect UI: http://$host:$port  (workspace $ws; Ctrl-C to stop)"
"$root/.venv/bin/prefect" server start --host "$host" --port "$port"
