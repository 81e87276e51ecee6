# Shared argument handling of start_train.sh, start_test.sh and start_crf.sh (sourced, not run).
# Moves to the repository, where the scripts, recipes/, weights/ and the default results/ are, and keeps every
# path the user gives relative to where the user stands (as start_predict.sh and the Python scripts do):
# DATAROOT, RECIPE, PYTHON (when a path) and, among the extra arguments, the values of PATH_FLAGS.
# Sets PYTHON, DATASET (first argument unless it is a flag or a stage; default demo), STAGE (the next
# argument when it is 1, 2 or all, e.g. "ISIC 2" or just "2" for the demo; default 1), DATAROOT, RECIPE (empty:
# the dataset's recipe), NAME, STAGE2_NAME and EXTRA (the remaining arguments, passed on to the Python script).
CALLER_DIR="$(pwd -P)"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_DIR="$(pwd -P)"
PATH_FLAGS=(--dataroot --result_dir --weights --recipe --out --readme --from_stage1)

from_caller() {
    # $1 as seen from the repository: unchanged when empty, absolute, or when the user stands in the repository.
    if [[ -z "$1" || "$1" == /* || "$CALLER_DIR" == "$REPO_DIR" ]]; then
        printf '%s' "$1"
    else
        printf '%s' "$CALLER_DIR/$1"
    fi
}

is_path_flag() {
    local flag
    for flag in "${PATH_FLAGS[@]}"; do
        [[ "$1" == "$flag" ]] && return 0
    done
    return 1
}

if [[ -n "${PYTHON:-}" && "$PYTHON" == */* ]]; then
    PYTHON="$(from_caller "$PYTHON")"
fi
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
if [[ -n "${DATAROOT:-}" ]]; then
    DATAROOT="$(from_caller "$DATAROOT")"
else
    DATAROOT=../shared/datasets  # beside the repository
fi
[[ "$DATASET" == demo ]] && DATAROOT=./dataset
RECIPE="$(from_caller "${RECIPE:-}")"
NAME="${NAME:-cltnet}"
STAGE2_NAME="${NAME}_stage2"  # the run start_train.sh DATASET 2 trains on NAME's pseudo-masks
EXTRA=()
while [[ $# -gt 0 ]]; do
    if is_path_flag "$1" && [[ $# -gt 1 ]]; then
        EXTRA+=("$1" "$(from_caller "$2")")
        shift 2
        continue
    elif [[ "$1" == --*=* ]] && is_path_flag "${1%%=*}"; then
        EXTRA+=("${1%%=*}=$(from_caller "${1#*=}")")
    else
        EXTRA+=("$1")
    fi
    shift
done
