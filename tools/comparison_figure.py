"""The masks of several methods side by side on a few testA images per dataset (the paper's first figure).

    RUNS=ISIC/cltnet=isic_lite0_release,BraTS/cltnet=brats_lite0_release,cam=cam_lite0,psa=psa_lite0
    python -m tools.comparison_figure --dataroot ../shared/datasets --result_dir ../runs \\
        --names "$RUNS,seam=seam_lite0,irn=irn_lite0" --out docs/comparison.png

A reader of finished run folders (<result_dir>/<dataset>/<folder>/<name>/, as tools/benchmark.py names them):
nothing is trained or predicted here. Columns: the image, its ground truth, then one per --methods entry (default
CLTNet, PSA, SEAM, IRN, CAM): that run's testA masks after crf.py where crf.py ran on it, else test.py's,
outlined on the image (green) beside the ground truth (red; reporting/overlay.py). The CLTNet column shows
whatever run --names gives it: for the released file, the run folder of ``test.py --weights weights/<DS>.pt``
and ``crf.py`` on it (a finished pipeline.py run's ``<name>_release``). The images are chosen by a fixed rule, never
by a score: --images of the testA images sorted by name, evenly spaced (the middle of each of --images equal parts).
Above each dataset's rows a line says which masks each column shows. A mask missing for any chosen image stops the
command with one line; the figure is written only once every mask is there.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data.image_io import read_image, read_mask, resize_mask, write_png_atomic
from data.layout import LayoutError, check_split
from options.base_options import default_folder
from records.run_folder import image_path, pipeline_run_name, run_folder, split_folder
from reporting.overlay import draw_overlay
from tools.benchmark import METHODS, NAMES, PIPELINE, PIPELINES, method_pairs, run_name

SPLIT = 'testA'
PAD = 2
FONT_PX = 14
BAND_PX = FONT_PX + 10  # the band naming the columns, and the one above each dataset's rows
# Column names: the paper's; any CLTNet run (its released file's, or a stage-1 run) is the CLTNet column.
LABELS = {**NAMES, 'cltnet': 'CLTNet', PIPELINE: 'CLTNet'}


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m tools.comparison_figure', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataroot', default='./dataset', help='folder holding <dataset>/<folder>/ (as train.py)')
    parser.add_argument('--result_dir', default='results', help='root of the run folders (as train.py)')
    parser.add_argument('--datasets', default='ISIC,BraTS',
                        help='comma-separated datasets, each in its default folder (ISIC: isic_1, BraTS: brats_1)')
    parser.add_argument('--methods', default='cltnet,psa,seam,irn,cam',
                        help=f'comma-separated columns after image and ground truth, from {", ".join(METHODS)} '
                             f'({", ".join(PIPELINES)}: the release run <name>_release of a pipeline.py run)')
    parser.add_argument('--names', default='',
                        help='run name per method as METHOD=NAME or DATASET/METHOD=NAME pairs (the latter wins), '
                             'as tools/benchmark.py takes them; default: the method name')
    parser.add_argument('--images', type=int, default=3, help='testA images per dataset')
    parser.add_argument('--tile', type=int, default=192, help='side of each image in the figure, in pixels')
    parser.add_argument('--out', default='docs/comparison.png', help='the PNG written')
    return parser


def parse(argv):
    parser = build_parser()
    opt = parser.parse_args(argv)
    opt.datasets = [d for d in (s.strip() for s in opt.datasets.split(',')) if d]
    opt.methods = [m for m in (s.strip() for s in opt.methods.split(',')) if m]
    unknown = [m for m in opt.methods if m not in METHODS]
    if not opt.datasets or not opt.methods or unknown:
        parser.error(f'--datasets and --methods need at least one entry each, methods from {", ".join(METHODS)}'
                     + (f'; unknown: {", ".join(unknown)}' if unknown else ''))
    if opt.images < 1 or opt.tile < 16:
        parser.error(f'--images must be at least 1 and --tile at least 16, got {opt.images} and {opt.tile}')
    opt.names = method_pairs(opt.names, '--names', parser, per_dataset=True)
    return opt


def chosen_images(opt, dataset):
    """[(image path, label path)] of ``opt.images`` testA images: sorted by name, evenly spaced."""
    folder = os.path.join(opt.dataroot, dataset, default_folder(dataset))
    try:
        pairs = sorted(check_split(folder, SPLIT, verify_images=False), key=lambda pair: os.path.basename(pair[0]))
    except LayoutError as error:
        raise SystemExit(f'error: {error}') from None
    count = min(opt.images, len(pairs))
    return [pairs[(2 * i + 1) * len(pairs) // (2 * count)] for i in range(count)]


def mask_folder(opt, dataset, method):
    """(split folder, 'crf' or 'test') of the masks shown for ``method``: crf.py's where it wrote testA masks."""
    name = run_name(opt.names, dataset, method)
    run = run_folder(opt.result_dir, dataset, default_folder(dataset),
                     pipeline_run_name(name, 'release') if method in PIPELINES else name)
    for stage in ('crf', 'test'):
        split = split_folder(run, stage, SPLIT)
        if os.path.isdir(os.path.join(split, 'masks')):
            return split, stage
    raise SystemExit(f'error: no {SPLIT} masks of {dataset}/{method} in {run}/crf or {run}/test: run test.py (and '
                     f'crf.py) on that run, or name another with --names {dataset}/{method}=NAME')


def mask_paths(opt, dataset, images):
    """{method: [mask path per image]} and {method: 'crf' or 'test'}; exits with one line naming the first
    missing mask."""
    paths, stages = {}, {}
    for method in opt.methods:
        split, stages[method] = mask_folder(opt, dataset, method)
        paths[method] = [image_path(split, 'masks', os.path.splitext(os.path.basename(image))[0])
                         for image, _ in images]
        missing = next((path for path in paths[method] if not os.path.isfile(path)), None)
        if missing:
            raise SystemExit(f'error: {missing} not found: the {dataset}/{method} run has no mask of that {SPLIT} '
                             f'image; run test.py (and crf.py) on it again')
    return paths, stages


def image_row(image, label, masks, side):
    """One row of tiles ``side`` px square: the image, its ground truth outlined (red), and each mask outlined
    (green) beside the ground truth; outlines drawn at the tile's size, so they stay sharp."""
    raw = np.asarray(Image.fromarray(read_image(image)).resize((side, side), Image.BILINEAR))
    gt = resize_mask(read_mask(label), (side, side))
    tiles = [raw, draw_overlay(raw, np.zeros_like(gt), gt)]
    tiles += [draw_overlay(raw, resize_mask(read_mask(path), (side, side)), gt) for path in masks]
    return np.concatenate([np.pad(tile, ((PAD, PAD), (PAD, PAD), (0, 0)), constant_values=255) for tile in tiles],
                          axis=1)


def _band(text, width, font):
    band = Image.new('RGB', (width, BAND_PX), 'white')
    ImageDraw.Draw(band).text((PAD + 2, BAND_PX / 2), text, fill=(34, 34, 34), font=font, anchor='lm')
    return np.asarray(band)


def _header(opt, font):
    """The band naming the columns, each name centred over its tile."""
    cell = opt.tile + 2 * PAD
    names = ['image', 'ground truth'] + [LABELS.get(m, m) for m in opt.methods]
    band = Image.new('RGB', (cell * len(names), BAND_PX), 'white')
    draw = ImageDraw.Draw(band)
    for index, name in enumerate(names):
        draw.text((cell * index + cell / 2, BAND_PX / 2), name, fill=(34, 34, 34), font=font, anchor='mm')
    return np.asarray(band)


def masks_shown(methods, stages):
    """Which masks the columns show: after crf.py, or test.py's where crf.py did not run on that run."""
    plain = [LABELS.get(m, m) for m in methods if stages[m] == 'test']
    if not plain:
        return 'every mask after crf.py'
    if len(plain) == len(methods):
        return "test.py's masks"
    return f"masks after crf.py, test.py's for {', '.join(plain)}"


def dataset_block(opt, dataset, font):
    """A dataset's band (which masks each column shows) over its image rows; checks every mask first."""
    images = chosen_images(opt, dataset)
    paths, stages = mask_paths(opt, dataset, images)
    shown = masks_shown(opt.methods, stages)
    rows = [image_row(image, label, [paths[m][i] for m in opt.methods], opt.tile)
            for i, (image, label) in enumerate(images)]
    names = ', '.join(os.path.splitext(os.path.basename(image))[0] for image, _ in images)
    print(f'{dataset}: {names}; {shown}')
    width = rows[0].shape[1]
    text = f'{dataset} ({SPLIT}; green: the column\'s mask, red: ground truth; {shown})'
    return np.concatenate([_band(text, width, font), *rows], axis=0)


def main(argv=None):
    """Write the figure of ``--out``; returns its path."""
    opt = parse(sys.argv[1:] if argv is None else [str(a) for a in argv])
    font = ImageFont.load_default(FONT_PX)
    blocks = [dataset_block(opt, dataset, font) for dataset in opt.datasets]
    figure = np.concatenate([_header(opt, font), *blocks], axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(opt.out)), exist_ok=True)
    write_png_atomic(opt.out, figure)
    print(f'wrote {opt.out} ({figure.shape[1]} x {figure.shape[0]} px)')
    return opt.out


if __name__ == '__main__':
    main()
