#!/usr/bin/env bash
# Start the visdom server for live loss curves, on this machine only (127.0.0.1).
#   bash start_visdom.sh              port $VISDOM_PORT (default 8097); Ctrl-C or SIGTERM stops it
# It needs no internet and never downloads: visdom's front-end files are put into its static/ folder
# by tools/install_visdom_assets.sh (run by tools/setup_env.sh, with npm registry access), and the
# marker that file writes stops visdom's own download at start. Environments live in results/visdom/.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
PORT="${VISDOM_PORT:-8097}"
ENV_PATH="results/visdom"
mkdir -p "$ENV_PATH"
# --offline: no network here; it only (re)writes the marker, and placeholders for files still missing
# (then it warns that the page stays blank).
bash tools/install_visdom_assets.sh --offline "$PYTHON" >/dev/null
echo "visdom: http://127.0.0.1:$PORT  (train with --display_port $PORT; Ctrl-C to stop)"
# The root page shows the empty env 'main'; each run plots into the env of its dataset, folder and name.
echo "a run's curves: http://127.0.0.1:$PORT/env/<dataset>_<folder>_<name> (start_train.sh's demo:" \
     "/env/demo_demo_1_cltnet; train.py --display_env sets another)," \
     "or pick the run in the page's Environment box"
# The server replaces this shell (signals reach it directly); Ctrl-C and SIGTERM end it with one line
# instead of a traceback. Like visdom itself it keeps plots in memory (saved to results/visdom/ only
# with the page's save button); every logged value is also in the run's loss_log.csv.
exec "$PYTHON" -c '
import signal, sys
from visdom.server.run_server import download_scripts_and_run
def stop(signum, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, stop)
sys.argv[0] = "visdom.server"
try:
    download_scripts_and_run()
except KeyboardInterrupt:
    print("visdom stopped", flush=True)
' -port "$PORT" --hostname 127.0.0.1 -bind_local -env_path "$ENV_PATH"
