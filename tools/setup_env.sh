#!/usr/bin/env bash
# Create .venv with everything the project and its tests need. Idempotent and fast when nothing
# changed: a stamp holding the hash of the requirement files skips the work.
#
# Usage: bash tools/setup_env.sh          (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
STAMP="$VENV/.setup-stamp"
HASH="$(cat requirements.txt requirements-dev.txt tools/setup_env.sh tools/install_visdom_assets.sh | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
    exit 0
fi
echo "setting up $VENV (first time: a few minutes)"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# visdom 0.2.4 is an sdist whose setup.py imports pkg_resources (gone from setuptools 81). The cap goes
# in the same resolve as torch: torch asks for setuptools>=77.0.3, and a fresh venv's setuptools 65
# would otherwise be upgraded past the cap to the newest release.
"${PIP[@]}" "setuptools<81" wheel -r requirements.txt -r requirements-dev.txt
"${PIP[@]}" --no-build-isolation visdom==0.2.4
# MONAI only for the metric cross-check; --no-deps so it cannot replace the installed torch.
"${PIP[@]}" --no-deps monai==1.6.1
bash tools/install_visdom_assets.sh "$VENV/bin/python"
# Where the npm registry could not be reached the assets are placeholders (visdom starts, its page is
# blank): leave the stamp unwritten, so the next run tries to fetch them again.
VISDOM_STATIC="$("$VENV/bin/python" -c 'import importlib.util, os
print(os.path.join(os.path.dirname(importlib.util.find_spec("visdom").origin), "static"))')"
if [[ -n "$(find "$VISDOM_STATIC" -type f -empty -print -quit)" ]]; then
    echo "environment ready: $VENV, except visdom's page (rerun this where the npm registry is reachable)"
    exit 0
fi
echo "$HASH" > "$STAMP"
echo "environment ready: $VENV"
