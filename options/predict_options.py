"""predict.py flags: a weights file, the user's files in, the masks out."""
import argparse
import os
import sys

from data.brats import MIN_BRAIN_FRAC
from data.predict_inputs import MAX_MEGAPIXELS, MAX_MEGAVOXELS, MIN_SLICE_SIDE

from .base_options import add_hardware_arguments, resolve_device, str2bool

DESCRIPTION = """Apply a weights file (weights/ISIC.pt, weights/BraTS.pt, a stage-1 or stage-2 file, or one
exported by tools/export_weights.py) to your own images and NIfTI volumes; no labels are needed.

    python predict.py --weights weights/ISIC.pt --input photos/ --output masks/
    python predict.py --weights weights/BraTS.pt --input BraTS2021/ --output masks/ --labels BraTS2021/

The file's stored choices are applied unchanged: map, threshold, post-processing, the image-level gate
where there is one, and the dense CRF with its stored parameters. Images get NAME_mask.png (0/255) at
their original size; volumes NAME_mask.nii.gz (uint8, 1 = lesion) in their own voxel grid, affine and
header, each axial slice prepared as tools/prepare_brats.py prepares training slices. OUTPUT also gets
predictions.csv: one row per file with its lesion score and area (and JA DI AC SE SP with --labels).
The lesion score is the model's image-level lesion probability: for a U-Net map (ISIC.pt, BraTS.pt) its
highest pixel, for a generator map its CAM classifier's; for a volume, that of its most lesion-like slice.

What the inputs must look like: the weights know only what they were trained on. BraTS.pt: FLAIR MRI, skull-
stripped with everything outside the brain exactly 0 and co-registered to BraTS's axial grid (as the BraTS
challenge data are); strip a raw scan first (e.g. HD-BET, FSL BET or SynthStrip) and set its background to 0.
ISIC.pt: colour dermoscopy photographs. Each input is checked against the weights' training data (grey or
colour, background, intensity range, NaN/inf values): a file that differs is predicted with a warning, in
the console and in predictions.csv's input_check column (refused with --refuse_unexpected True); a colour
image given to MRI weights is refused. A file larger than --max_megapixels / --max_megavoxels, or a volume
with slices smaller than --min_slice_side, is refused (its row says why) and the others go on.

Ctrl-C stops cleanly (exit status 130) after writing predictions.csv for the files done; the same command
again continues: OUTPUT/predict_manifest.jsonl records each finished file, and a file whose input, weights,
--crf, --largest_3d and --min_brain_frac are unchanged and whose outputs exist is not predicted again
(--overwrite True redoes every file)."""


# A boolean flag alone means True; True/False (yes/no, 1/0) may follow it, as in the other scripts.
FLAG = dict(nargs='?', const=True, default=False, type=str2bool, metavar='True|False')


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected an integer >= 1, got {text}')
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f'expected a number > 0, got {text}')
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, each flag's default after its help."""


def _add_check_arguments(parser):
    """The flags of the per-file checks: inputs unlike the training data, and the work one file may take."""
    g = parser.add_argument_group('checks per file')
    g.add_argument('--refuse_unexpected', **FLAG,
                   help='True: refuse (no mask; status "refused: ..." in predictions.csv) every file unlike the '
                        'weights\' training data, e.g. an MRI volume whose background is not 0; False: predict it '
                        'and warn (the input_check column)')
    g.add_argument('--max_megapixels', type=_positive_float, default=MAX_MEGAPIXELS,
                   help='images larger than this many million pixels are refused, per file (memory and time grow '
                        'with the size: a 144-megapixel image took 4.6 GB); a 6000x4000 photograph is 24')
    g.add_argument('--max_megavoxels', type=_positive_float, default=MAX_MEGAVOXELS,
                   help='volumes larger than this many million voxels are refused, per file (a BraTS volume, '
                        '240x240x155, is 8.9)')
    g.add_argument('--min_slice_side', type=_positive, default=MIN_SLICE_SIDE,
                   help='volumes whose axial slices are narrower than this many voxels are refused, per file: each '
                        'slice costs a full 256 px prediction (a 1x1x500 volume took 5 minutes for nothing)')


def build_parser():
    """The argparse parser of predict.py; every flag explained in --help."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=_Formatter)
    g = parser.add_argument_group('what to apply, to what')
    g.add_argument('--weights', required=True, default=argparse.SUPPRESS,
                   help='weights file with stored choices: weights/ISIC.pt (dermoscopy photographs), weights/BraTS.pt '
                        '(FLAIR MRI volumes or slices), a stage-1 or stage-2 file of weights/, or your own export')
    g.add_argument('--input', required=True, default=argparse.SUPPRESS,
                   help='an image (PNG/JPG/BMP/TIFF, grey/RGB/RGBA/16-bit/float), a NIfTI volume (.nii, .nii.gz), '
                        'or a folder of them; BraTS subject folders (<ID>/<ID>_flair.nii.gz) are found one level '
                        'down, their _seg and other sequences left out; *_segmentation images are left out too')
    g.add_argument('--output', required=True, default=argparse.SUPPRESS,
                   help='folder for the outputs (created; never inside --input): <name>_mask.png / '
                        '<name>_mask.nii.gz per input, in the input\'s subfolders, predictions.csv (a row per '
                        'file), predictions_summary.json (counts, mean scores) and predict_manifest.jsonl (what is '
                        'done, for a rerun)')
    g.add_argument('--recursive', **FLAG,
                   help='True: also the files in every subfolder of --input; False: its own files and its BraTS '
                        'subject folders')
    g.add_argument('--labels', default=None,
                   help='ground truth to score against (a mask file, or a folder searched with its subfolders '
                        'for NAME_segmentation.png, NAME.png, <ID>_seg.nii.gz or NAME.nii.gz): adds JA DI AC SE '
                        'SP to the rows of predictions.csv of the files that have a label (over the 3-D voxels for '
                        'a volume; the others are listed, unscored) and their means to the console and '
                        'predictions_summary.json')
    g.add_argument('--allow_other_dataset', **FLAG,
                   help='True: apply weights trained on ISIC photographs to NIfTI volumes, and weights trained on '
                        'MRI to colour images, with a warning (refused otherwise)')
    g.add_argument('--min_brain_frac', type=float, default=MIN_BRAIN_FRAC,
                   help='volumes: slices whose brain (non-zero voxels) covers no more than this fraction of the '
                        'slice get an empty mask unpredicted: tools/prepare_brats.py keeps no such slice for training '
                        '(the same default), so the weights never saw one; 0 predicts every slice with any brain')
    g = parser.add_argument_group('what to write')
    g.add_argument('--crf', **dict(FLAG, default=True),
                   help="True: refine each mask with the dense CRF stored in the weights file (on a copy shrunk to "
                        "256 px for a larger image, the scale its parameters were chosen at); False: the stored "
                        "threshold and post-processing alone")
    g.add_argument('--save_prob', **FLAG,
                   help='True: also <name>_prob.png (16-bit) / <name>_prob.nii.gz (float32): the lesion probability '
                        'before the CRF, calibrated so that >= 0.5 is the mask without the CRF')
    g.add_argument('--save_overlay', **FLAG,
                   help='True: also <name>_overlay.png for images: the mask outline in green on the image (and the '
                        'label\'s in red with --labels)')
    g.add_argument('--largest_3d', **FLAG,
                   help="True: keep only the largest 3-D connected component of each volume's mask")
    g.add_argument('--overwrite', **FLAG,
                   help='True: predict every file again, replacing its outputs in --output; False: skip the files '
                        'finished by an earlier run of this command (predict_manifest.jsonl) and refuse, before any '
                        'work, to replace an output made otherwise')
    g.add_argument('--skip_bad_images', **FLAG,
                   help='True: go on without files that cannot be read (listed in predictions.csv) instead of '
                        'stopping at the first')
    g = parser.add_argument_group('speed')
    g.add_argument('--batch_size', type=_positive, default=8, help='images or slices per network batch')
    g.add_argument('--num_workers', type=int, default=2,
                   help='processes reading images ahead of the network (0 = the main process)')
    g.add_argument('--crf_workers', type=int, default=os.cpu_count() or 1,
                   help='CRF worker processes (0 or 1 = the main process)')
    _add_check_arguments(parser)
    add_hardware_arguments(parser)
    return parser


def parse(argv=None):
    """Parse ``argv`` (default sys.argv[1:]); ``device`` resolved, ``is_train`` False, ``command_line`` set."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    opt = parser.parse_args(argv)
    if opt.num_workers < 0:
        parser.error(f'--num_workers must be >= 0, got {opt.num_workers}')
    if not 0 <= opt.min_brain_frac < 1:
        parser.error(f'--min_brain_frac must be in [0, 1), got {opt.min_brain_frac}')
    opt.device = resolve_device(opt.device)
    opt.is_train = False
    opt.command_line = ' '.join(['predict.py'] + argv)
    return opt
