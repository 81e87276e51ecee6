#!/usr/bin/env bash
# Refine test.py's lesion maps with a dense CRF whose parameters are chosen on val.
#   bash start_crf.sh                    the demo run of start_train.sh / start_test.sh
#   DATAROOT=../shared/datasets bash start_crf.sh ISIC     (or BraTS)
# Extra arguments go to crf.py (python crf.py --help); prints the before/after table.
set -euo pipefail
cd "$(dirname "$0")"
source tools/launcher_common.sh
# "DATASET 2": the stage-2 run instead of stage 1.
[[ "$STAGE" == 2 ]] && NAME="$STAGE2_NAME"
exec "$PYTHON" crf.py --dataset "$DATASET" --dataroot "$DATAROOT" --name "$NAME" "${EXTRA[@]}"
