#!/usr/bin/env bash
# Choose checkpoint, map mode and threshold on val, then predict and score testA / testB.
#   bash start_test.sh                   the demo run of start_train.sh
#   DATAROOT=../shared/datasets bash start_test.sh ISIC    (or BraTS); with no local run of that
#                                        name, the released weights/ISIC.pt are used
# Extra arguments go to test.py (python test.py --help).
set -euo pipefail
cd "$(dirname "$0")"
source tools/launcher_common.sh
test_args=(--dataset "$DATASET" --dataroot "$DATAROOT" --name "$NAME")
RUN="results/$DATASET/$("$PYTHON" -c "from options.base_options import default_folder; print(default_folder('$DATASET'))")/$NAME"
if ! ls "$RUN"/checkpoints/iter_*.pt >/dev/null 2>&1 && [[ -f "weights/$DATASET.pt" ]]; then
    echo "no checkpoints in $RUN: using the released weights/$DATASET.pt"
    test_args+=(--weights "weights/$DATASET.pt")
fi
exec "$PYTHON" test.py "${test_args[@]}" "${EXTRA[@]}"
