#!/usr/bin/env bash
# Train CLTNet.
#   bash start_train.sh                  the embedded demo data (made on first use), a few minutes
#   DATAROOT=../shared/datasets bash start_train.sh ISIC   (or BraTS) with that dataset's loss weights
#   NAME=myrun bash start_train.sh ISIC --iteration 500    extra arguments go to train.py
#   NPROC=4 bash start_train.sh ISIC     4 processes on this machine (torchrun, DistributedDataParallel;
#                                        one GPU each; --batch_size is per process; the rendezvous
#                                        listens on 127.0.0.1 only, see tools/torchrun_local.py)
#   bash start_train.sh ISIC 2           stage 2: stage 1 (resumed, so a finished run is kept), test.py and
#                                        crf.py on it, pseudo.py, then a U-Net on the pseudo-masks, run
#                                        "$NAME"_stage2; STAGE2_ARGS="--few_sample stage2_50" adds flags to it
#                                        (a second time: STAGE2_ARGS="--overwrite True" or "--resume True");
#                                        one call of the step runner (python -m workflow.stage2_chain), which
#                                        skips the steps that are up to date when run again
#   bash start_train.sh 2                the same on the demo data
#   bash start_train.sh ISIC all         the whole pipeline with recipes/ISIC.toml (pipeline.py): stage 1,
#                                        self-training rounds, the released two-stage file <run>/release.pt;
#                                        RECIPE=my.toml picks another recipe; extra arguments go to pipeline.py
# Paths are taken from where you run it (DATAROOT, RECIPE, and --dataroot, --result_dir, --weights, --recipe,
# --out, --readme, --from_stage1 among the extra arguments); runs go to the repository's results/ by default.
# The preset is 'paper' on a GPU and 'cpu' otherwise (python train.py --help lists every flag).
set -euo pipefail
source "$(dirname "$0")/tools/launcher_common.sh"  # moves to the repository; paths stay the caller's
if [[ "$STAGE" == all ]]; then
    exec "$PYTHON" pipeline.py --dataroot "$DATAROOT" --dataset "$DATASET" \
        --recipe "${RECIPE:-recipes/$DATASET.toml}" --name "$NAME" "${EXTRA[@]}"
fi
train_args=(--name "$NAME")
if [[ "$DATASET" == demo ]]; then
    # The demo phantoms are 64 px: a small network learns them in a few hundred steps.
    train_args+=(--dataset demo --dataroot ./dataset --img_size 64 --ch 16 --iteration 400
                 --save_freq 100 --print_freq 50)
else
    train_args+=(--dataset "$DATASET" --dataroot "$DATAROOT")
fi
if [[ "$STAGE" == 2 ]]; then
    run_args=(--dataset "$DATASET" --dataroot "${DATAROOT}" --name "$NAME")
    stage2_args=(--dataset "$DATASET" --dataroot "$DATAROOT" --stage 2 --pseudo "$NAME" --name "${NAME}_stage2")
    # The demo's stage 2 matches its stage 1: 64 px images, a narrow network, a few hundred steps.
    [[ "$DATASET" == demo ]] && stage2_args+=(--img_size 64 --ch 16 --iteration 300 --save_freq 100 --print_freq 50)
    read -r -a user_stage2 <<< "${STAGE2_ARGS:-}"
    # One step runner (workflow/stage2_chain.py): train -> test -> crf -> pseudo -> stage-2 train.
    exec "$PYTHON" -m workflow.stage2_chain "${run_args[@]}" -- "${train_args[@]}" --resume True "${EXTRA[@]}" \
        -- "${stage2_args[@]}" "${user_stage2[@]}"
fi
NPROC="${NPROC:-1}"
if [[ ! "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: NPROC must be a whole number of processes, got '$NPROC'" >&2
    exit 2
fi
if (( NPROC > 1 )); then
    # torchrun of the same Python (the venv's torch), its rendezvous store on 127.0.0.1 only.
    exec "$PYTHON" -m tools.torchrun_local --nproc_per_node="$NPROC" train.py "${train_args[@]}" "${EXTRA[@]}"
fi
exec "$PYTHON" train.py "${train_args[@]}" "${EXTRA[@]}"
