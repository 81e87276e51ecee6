#!/usr/bin/env bash
# Train CLTNet.
#   bash start_train.sh                  the embedded demo data (made on first use), a few minutes
#   DATAROOT=../shared/datasets bash start_train.sh ISIC   (or BraTS) with that dataset's loss weights
#   NAME=myrun bash start_train.sh ISIC --iteration 500    extra arguments go to train.py
# The preset is 'paper' on a GPU and 'cpu' otherwise (python train.py --help lists every flag).
set -euo pipefail
cd "$(dirname "$0")"
source tools/launcher_common.sh
train_args=(--name "$NAME")
if [[ "$DATASET" == demo ]]; then
    # The demo phantoms are 64 px: a small network learns them in a few hundred steps.
    train_args+=(--dataset demo --dataroot ./dataset --img_size 64 --ch 16 --iteration 400
                 --save_freq 100 --print_freq 50)
else
    train_args+=(--dataset "$DATASET" --dataroot "$DATAROOT")
fi
exec "$PYTHON" train.py "${train_args[@]}" "${EXTRA[@]}"
