#!/usr/bin/env bash
# Choose checkpoint, map mode and threshold on val, then predict and score testA / testB.
#   bash start_test.sh                   the demo run of start_train.sh
#   DATAROOT=../shared/datasets bash start_test.sh ISIC    (or BraTS); with no local run of that
#                                        name, the released weights/ISIC.pt are used
#   DATAROOT=../shared/datasets bash start_test.sh ISIC 2  the stage-2 run of start_train.sh ISIC 2
# Paths are taken from where you run it (DATAROOT, RECIPE, and --dataroot, --result_dir, --weights, --recipe,
# --out, --readme, --from_stage1 among the extra arguments); runs go to the repository's results/ by default.
# Extra arguments go to test.py (python test.py --help).
set -euo pipefail
source "$(dirname "$0")/tools/launcher_common.sh"  # moves to the repository; paths stay the caller's
# "DATASET 2": the stage-2 run instead of stage 1 (no released fallback: weights/DATASET.pt holds both stages).
[[ "$STAGE" == 2 ]] && NAME="$STAGE2_NAME"
test_args=(--dataset "$DATASET" --dataroot "$DATAROOT" --name "$NAME")
FOLDER="$("$PYTHON" -c "from options.base_options import default_folder; print(default_folder('$DATASET'))")"
RUN="results/$DATASET/$FOLDER/$NAME"
WEIGHTS="weights/$DATASET.pt"
if ! ls "$RUN"/checkpoints/iter_*.pt >/dev/null 2>&1; then
    if [[ "$STAGE" == 2 ]]; then
        echo "error: no checkpoints in $RUN: train it (bash start_train.sh $DATASET 2), or test the released" \
             "two-stage file, which holds a stage-2 U-Net (bash start_test.sh $DATASET)" >&2
        exit 1
    elif [[ -f "$WEIGHTS" ]]; then
        echo "no checkpoints in $RUN: using the released $WEIGHTS"
        test_args+=(--weights "$WEIGHTS")
    fi
fi
exec "$PYTHON" test.py "${test_args[@]}" "${EXTRA[@]}"
