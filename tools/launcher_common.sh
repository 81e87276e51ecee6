# Shared argument handling of start_train.sh, start_test.sh and start_crf.sh (sourced, not run).
# Sets PYTHON, DATASET (first argument unless it is a flag; default demo), DATAROOT, NAME and EXTRA
# (the remaining arguments, passed on to the Python script).
PYTHON="${PYTHON:-.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
DATASET=demo
if [[ $# -gt 0 && "$1" != -* ]]; then
    DATASET="$1"
    shift
fi
DATAROOT="${DATAROOT:-../shared/datasets}"
[[ "$DATASET" == demo ]] && DATAROOT=./dataset
NAME="${NAME:-cltnet}"
EXTRA=("$@")
