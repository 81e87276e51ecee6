"""predict.py flags: a weights file, the user's files in, the masks out."""
import argparse
import os
import sys

from data.brats import MIN_BRAIN_FRAC

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
highest pixel, for a generator map its CAM classifier's; for a volume, that of its most lesion-like slice."""


# A boolean flag alone means True; True/False (yes/no, 1/0) may follow it, as in the other scripts.
FLAG = dict(nargs='?', const=True, default=False, type=str2bool, metavar='True|False')


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected an integer >= 1, got {text}')
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, each flag's default after its help."""


def build_parser():
    """The argparse parser of predict.py; every flag explained in --help."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=_Formatter)
    g = parser.add_argument_group('what to apply, to what')
    g.add_argument('--weights', required=True, default=argparse.SUPPRESS,
                   help='weights file with stored choices: weights/ISIC.pt (dermoscopy photographs), weights/BraTS.pt '
                        '(FLAIR MRI volumes or slices), a stage-1 or stage-2 file of weights/, or your own export')
    g.add_argument('--input', required=True, default=argparse.SUPPRESS,
                   help='an image (PNG/JPG/BMP/TIFF, any size, grey/RGB/RGBA/16-bit), a NIfTI volume (.nii, .nii.gz), '
                        'or a folder of them; BraTS subject folders (<ID>/<ID>_flair.nii.gz) are found one level '
                        'down, their _seg and other sequences left out; *_segmentation images are left out too')
    g.add_argument('--output', required=True, default=argparse.SUPPRESS,
                   help='folder for the outputs (created; never inside --input): <name>_mask.png / '
                        '<name>_mask.nii.gz per input, in the input\'s subfolders, and predictions.csv')
    g.add_argument('--recursive', **FLAG,
                   help='True: also the files in every subfolder of --input; False: its own files and its BraTS '
                        'subject folders')
    g.add_argument('--labels', default=None,
                   help='ground truth to score against (a mask file, or a folder searched with its subfolders '
                        'for NAME_segmentation.png, NAME.png, <ID>_seg.nii.gz or NAME.nii.gz): adds JA DI AC SE '
                        'SP per file and their means to predictions.csv (over the 3-D voxels for a volume)')
    g.add_argument('--allow_other_dataset', **FLAG,
                   help='True: apply weights trained on ISIC photographs to NIfTI volumes (refused otherwise)')
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
                   help='True: replace outputs that already exist in --output (refused otherwise, before any work)')
    g.add_argument('--skip_bad_images', **FLAG,
                   help='True: go on without files that cannot be read (listed in predictions.csv) instead of '
                        'stopping at the first')
    g = parser.add_argument_group('speed')
    g.add_argument('--batch_size', type=_positive, default=8, help='images or slices per network batch')
    g.add_argument('--num_workers', type=int, default=2,
                   help='processes reading images ahead of the network (0 = the main process)')
    g.add_argument('--crf_workers', type=int, default=os.cpu_count() or 1,
                   help='CRF worker processes (0 or 1 = the main process)')
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
