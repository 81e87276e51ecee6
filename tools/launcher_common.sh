# Shared argument handling of start_train.sh, start_test.sh and start_crf.sh (sourced, not run).
# Sets PYTHON, DATASET (first argument unless it is a flag or a stage; default demo), STAGE (the next
# argument when it is 1, 2 or all, e.g. "ISIC 2" or just "2" for the demo; default 1), DATAROOT, NAME, STAGE2_NAME and EXTRA (the remaining arguments, passed on to the Python script).
PYTHON="${PYTHON:-.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
DATASET=demo
if [[ $# -gt 0 && "$1" != -* && "$1" != 1 && "$1" != 2 && "$1" != all ]]; then
    DATASET="$1"
    shift
fi
STAGE=1
if [[ $# -gt 0 && ( "$1" == 1 || "$1" == 2 || "$1" == all ) ]]; then
    STAGE="$1"
    shift
fi
DATAROOT="${DATAROOT:-../shared/datasets}"
[[ "$DATASET" == demo ]] && DATAROOT=./dataset
NAME="${NAME:-cltnet}"
STAGE2_NAME="${NAME}_stage2"  # the run start_train.sh DATASET 2 trains on NAME's pseudo-masks
EXTRA=("$@")
