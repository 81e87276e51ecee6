#!/usr/bin/env bash
# Apply a weights file to your own images and NIfTI volumes, from any folder:
#   bash start_predict.sh --weights weights/ISIC.pt --input photos/ --output masks/
# The arguments are predict.py's (python predict.py --help); paths are taken from where you run it.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-$HERE/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
# predict.py loads torch before util/ can set OpenMP's wait policy: set here, idle threads sleep instead of
# spinning against other jobs (util/__init__.py says why).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" KMP_BLOCKTIME="${KMP_BLOCKTIME:-0}"
exec "$PYTHON" "$HERE/predict.py" "$@"
