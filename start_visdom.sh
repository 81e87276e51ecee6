#!/usr/bin/env bash
# Start the visdom server for live loss curves, on this machine only (127.0.0.1).
#   bash start_visdom.sh              port $VISDOM_PORT (default 8097); Ctrl-C stops it
# Its front-end files come from tools/install_visdom_assets.sh (run by tools/setup_env.sh), so it
# needs no internet; its saved environments live under results/visdom/.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
PORT="${VISDOM_PORT:-8097}"
ENV_PATH="results/visdom"
mkdir -p "$ENV_PATH"
bash tools/install_visdom_assets.sh "$PYTHON" >/dev/null
echo "visdom: http://127.0.0.1:$PORT  (train with --display_port $PORT; Ctrl-C to stop)"
exec "$PYTHON" -m visdom.server -port "$PORT" --hostname 127.0.0.1 -bind_local -env_path "$ENV_PATH"
