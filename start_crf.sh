#!/usr/bin/env bash
# Refine test.py's lesion maps with a dense CRF whose parameters are chosen on val.
#   bash start_crf.sh                    the demo run of start_train.sh / start_test.sh
#   DATAROOT=../shared/datasets bash start_crf.sh ISIC     (or BraTS)
# Paths are taken from where you run it (DATAROOT, RECIPE, and --dataroot, --result_dir, --weights, --recipe,
# --out, --readme, --from_stage1 among the extra arguments); runs go to the repository's results/ by default.
# Extra arguments go to crf.py (python crf.py --help); prints the before/after table.
set -euo pipefail
source "$(dirname "$0")/tools/launcher_common.sh"  # moves to the repository; paths stay the caller's
# "DATASET 2": the stage-2 run instead of stage 1.
[[ "$STAGE" == 2 ]] && NAME="$STAGE2_NAME"
exec "$PYTHON" crf.py --dataset "$DATASET" --dataroot "$DATAROOT" --name "$NAME" "${EXTRA[@]}"
