"""Build the weak-label ISIC layout (docs/DESIGN.md) from an official ISIC 2016/2017/2018 download.

    python -m tools.prepare_isic --images ISIC-2017_Training_Data \\
        --masks ISIC-2017_Training_Part1_GroundTruth --out DATAROOT [--folder isic_1]

Every image ``<id>.jpg|png`` in --images needs its mask ``<id>_segmentation.png`` (or
``_Segmentation.png``, ISIC 2016) in --masks. The rules follow shared/datasets/SOURCES.md:

- the images are shuffled with --seed and handed out in turn to val, testA, testB, A_weak and B_weak,
  so no image serves two roles;
- val / testA / A_weak: the whole image resized to --size x --size (as the shipped data: the aspect
  ratio is not kept), masks resized with nearest neighbour to 0/255;
- testB / B_weak: one square patch of healthy skin per image, cut at a working scale whose short side
  is 256 px: outside the lesion mask dilated by 16 px, at least 4 px from the border, without dark
  (vignette) regions, very dark pixels or off-colour regions (rulers, stickers), mean brightness close
  to the skin's; the largest such patch (side 160 down to 72 px), farthest from the lesion among
  equals, is cut from the full-resolution image and resized to --size. Images without one are skipped.

Files are ``<id>.png`` (+ ``<id>_segmentation.png``) and ``<id>_health.png``; ``splits.json`` lists
the ids of each role and the patch box (x0, y0, x1, y1, original pixels) of each healthy patch.
"""
import argparse
import os

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from data.image_io import ImageReadError, read_image, read_mask, write_png_atomic
from tools.prepare_common import (PrepareError, add_output_args, find_pairs, positive_int,
                                  require_dir, name_weak_folders, require_filled, resize_pair, run_cli,
                                  staged_folder, summary_line, write_labelled, write_splits)

SKIPPED_SUFFIXES = ('_superpixels',)  # ISIC 2017 ships superpixel PNGs beside the images
WORK_SIDE = 256     # patch rules are stated at this short-side scale
LESION_MARGIN = 16  # px kept between a patch and the lesion
BORDER = 4          # px kept from the image border
GROW = 6            # px by which dark and off-colour regions are grown
PATCH_SIDES = range(160, 71, -8)
DARK, VERY_DARK, OFF_COLOUR = 0.7, 0.6, 0.12  # fractions of the median skin luminance / chroma distance
MEAN_RANGE = (0.85, 1.25)


def _window_sums(values, side):
    """Sum of ``values`` in every ``side`` x ``side`` window, indexed by its top-left corner."""
    total = np.pad(values.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return total[side:, side:] - total[:-side, side:] - total[side:, :-side] + total[:-side, :-side]


def _excluded(rgb, lesion):
    """(excluded bool map, distance to the lesion, median skin luminance) at working scale, or None
    when no skin is left to measure."""
    lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    distance = ndimage.distance_transform_edt(~lesion) if lesion.any() else np.full(lesion.shape, np.inf)
    excluded = distance <= LESION_MARGIN
    excluded[:BORDER, :] = excluded[-BORDER:, :] = excluded[:, :BORDER] = excluded[:, -BORDER:] = True
    if excluded.all():
        return None
    skin_lum = np.median(lum[~excluded])
    chroma = rgb / (rgb.sum(axis=2, keepdims=True) + 1e-6)
    off_colour = np.abs(chroma - np.median(chroma[~excluded], axis=0)).sum(axis=2) > OFF_COLOUR
    # Opening drops hair-thin dark lines so that only dark regions (vignette corners) are grown.
    dark = ndimage.binary_opening(lum < DARK * skin_lum, iterations=2)
    grown = ndimage.binary_dilation(dark | off_colour, iterations=GROW)
    return excluded | grown | (lum < VERY_DARK * skin_lum), distance, lum / skin_lum


def find_healthy_patch(image, mask):
    """Box (x0, y0, x1, y1) in ``image`` pixels of the largest square healthy-skin patch, or None."""
    h, w = mask.shape
    scale = WORK_SIDE / min(h, w)
    size = (max(round(w * scale), WORK_SIDE), max(round(h * scale), WORK_SIDE))
    rgb = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR), np.float32)
    lesion = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    found = _excluded(rgb, lesion)
    if found is None:
        return None
    excluded, distance, relative_lum = found
    for side in PATCH_SIDES:
        if side > min(excluded.shape):
            continue
        mean_lum = _window_sums(relative_lum, side) / side ** 2
        ok = (_window_sums(excluded, side) == 0) & (mean_lum >= MEAN_RANGE[0]) & (mean_lum <= MEAN_RANGE[1])
        if ok.any():
            centre_distance = distance[side // 2:, side // 2:][:ok.shape[0], :ok.shape[1]]
            y, x = np.unravel_index(np.argmax(np.where(ok, centre_distance, -1)), ok.shape)
            side_px = round(side / scale)
            x0, y0 = min(round(x / scale), w - side_px), min(round(y / scale), h - side_px)
            return int(x0), int(y0), int(x0 + side_px), int(y0 + side_px)
    return None


def _fill(args, order, folder):
    """Hand the shuffled ``order`` of (id, image, mask) paths out to the output folders in turn and write
    each one's file under ``folder``; returns (files, roles, patch boxes, skipped counts). PrepareError
    listing every image or mask read on the way that cannot be decoded."""
    wanted = {'val': args.n_val, 'testA': args.n_testA, 'testB': args.n_testB, 'A_weak': args.n_a,
              'B_weak': args.n_b}
    role_of = {'val': 'val', 'testA': 'test', 'testB': 'test', 'A_weak': 'train', 'B_weak': 'train'}
    files = {name: [] for name in wanted}
    roles = {'train': [], 'val': [], 'test': []}
    patches, skipped, unreadable = {}, {'empty mask': 0, 'no healthy patch': 0}, []
    pending = iter(wanted)
    current = next(pending)
    with tqdm(total=min(sum(wanted.values()), len(order)), desc='images', unit='img') as bar:
        for image_id, image_path, mask_path in order:
            while current is not None and len(files[current]) == wanted[current]:
                current = next(pending, None)
            if current is None:
                break
            try:
                image, mask = read_image(image_path), read_mask(mask_path)
            except ImageReadError as err:
                # Headers were fine, the data are not (a truncated download): go on, to list them all.
                unreadable.append(str(err))
                continue
            if current in ('testB', 'B_weak'):
                box = find_healthy_patch(image, mask)
                if box is None:
                    skipped['no healthy patch'] += 1
                    continue
                name = f'{image_id}_health.png'
                patch = Image.fromarray(image).resize((args.size, args.size), Image.LANCZOS, box=box)
                write_png_atomic(os.path.join(folder, current, name), np.asarray(patch))
                patches[name] = list(box)
            else:
                image, mask = resize_pair(image, mask, args.size)
                if not mask.any():
                    skipped['empty mask'] += 1  # not a lesion image, and val/testA masks must not be empty
                    continue
                name = f'{image_id}.png'
                if current == 'A_weak':
                    write_png_atomic(os.path.join(folder, current, name), image)
                else:
                    write_labelled(os.path.join(folder, current), image_id, image, mask)
            files[current].append(name)
            roles[role_of[current]].append(image_id)
            bar.update()
    if unreadable:
        raise PrepareError(unreadable)
    return files, {role: sorted(ids) for role, ids in roles.items()}, patches, skipped


def run(args):
    """Build the layout for parsed ``args``; returns the summary line."""
    require_dir(args.images, '--images')
    require_dir(args.masks, '--masks')
    pairs = find_pairs(args.images, args.masks, SKIPPED_SUFFIXES)
    order = [pairs[i] for i in np.random.RandomState(args.seed).permutation(len(pairs))]
    with staged_folder(args.out, 'ISIC', args.folder, args.overwrite) as temp:
        files, roles, patches, skipped = _fill(args, order, temp)
        hint = (f'{len(pairs)} images with masks found, {sum(skipped.values())} skipped; lower '
                f'--n_val/--n_testA/--n_testB/--n_a (images go to val, testA, testB, A_weak, B_weak in turn)')
        require_filled(args.images, files, dict.fromkeys(files, hint))
        files = name_weak_folders(temp, files)
        settings = {k: getattr(args, k) for k in ('images', 'masks', 'size', 'seed', 'n_val', 'n_testA',
                                                  'n_testB', 'n_a', 'n_b')}
        write_splits(temp, roles, files, settings, {'patches': dict(sorted(patches.items())), 'skipped': skipped})
    note = ''.join(f', {n} skipped ({why})' for why, n in skipped.items() if n)
    return summary_line('ISIC', files, os.path.join(args.out, 'ISIC', args.folder), note)


def build_parser():
    """The argparse parser of this tool; every flag explained in --help."""
    parser = argparse.ArgumentParser(prog='python -m tools.prepare_isic', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', required=True, help='folder of ISIC images <id>.jpg/.png (not recursive)')
    parser.add_argument('--masks', required=True,
                        help='folder of their masks <id>_segmentation.png or <id>_Segmentation.png')
    add_output_args(parser, 'isic_1')
    parser.add_argument('--n_val', type=positive_int, default=50,
                        help='images (with masks) for val (default %(default)s)')
    parser.add_argument('--n_testA', type=positive_int, default=100,
                        help='images (with masks) for testA (default %(default)s)')
    parser.add_argument('--n_testB', type=positive_int, default=50,
                        help='healthy-skin patches for testB, one per image, from images of no other role '
                             '(default %(default)s)')
    parser.add_argument('--n_a', type=positive_int, default=500,
                        help='lesion images for <N>_A_weak (default %(default)s)')
    parser.add_argument('--n_b', type=positive_int, default=500,
                        help='at most this many healthy-skin patches for <M>_B_weak, cut from the training '
                             'images left after the other roles (default %(default)s)')
    return parser


def main(argv=None):
    """Command-line entry point."""
    run_cli(run, build_parser(), argv)


if __name__ == '__main__':
    main()
