"""What tools/prepare_brats.py, prepare_isic.py and prepare_weak.py share: flags, the staged output folder,
image/mask pairs, the split by source id, the layout check and the closing summary.

Both tools build ``DATAROOT/<dataset>/<folder>/`` (docs/DESIGN.md layout) in a hidden sibling folder and
rename it into place only after the whole layout has been written and checked, so an interrupted or
failed run never leaves a half-made dataset where train.py would find it.
"""
import argparse
import contextlib
import os
import shutil
import sys
import uuid

import numpy as np
from PIL import Image

from data.image_io import PIL_READ_ERRORS, ImageReadError, list_images, write_json_atomic, write_png_atomic
from data.layout import LABEL_SUFFIX, check_split, check_training_layout
from options.base_options import DATA_FOLDER, check_folder_names, folder_name_error, str2bool

DEFAULT_SEED = 20240601  # the seed the shipped datasets were built with (shared/datasets/SOURCES.md)
EVAL_SPLITS = ('val', 'testA', 'testB')
MASK_SUFFIX = '_segmentation'  # ISIC 2016 spells it '_Segmentation'; matched case-insensitively


class PrepareError(Exception):
    """Problems with the user's input: one line naming the offending path, or for a list of several
    problems, a count and then one such line each (so a folder is fixed in one pass)."""

    def __init__(self, problems):
        lines = [' '.join(str(p).split()) for p in (problems if isinstance(problems, list) else [problems])]
        if len(lines) > 1:
            lines = [f'{len(lines)} problems found:'] + [f'  {line}' for line in lines]
        super().__init__('\n'.join(lines))


def int_at_least(low):
    """argparse type: an integer >= ``low`` (named in the error)."""
    def parse(text):
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f'expected an integer >= {low}, got {text}')
        return value
    parse.__name__ = f'integer >= {low}'
    return parse


positive_int = int_at_least(1)


def add_output_args(parser, default_folder):
    """Add the flags the tools share: --out, --folder (``default_folder`` None: decided later), --size,
    --seed, --overwrite."""
    parser.add_argument('--out', required=True, metavar='DATAROOT',
                        help='dataroot to write into (what train.py takes as --dataroot)')
    shown = default_folder or "train.py's default for the dataset, e.g. mylesions_1"
    parser.add_argument('--folder', default=default_folder,
                        help=f'name of the dataset folder to create, one folder name without / or \\ '
                             f'(train.py --folder; default {shown})')
    parser.add_argument('--size', type=positive_int, default=256,
                        help='side of the square output images and masks in pixels (default %(default)s)')
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED,
                        help='seed of the split and of the sampling; the same seed and input give '
                             'byte-identical output (default %(default)s)')
    parser.add_argument('--overwrite', type=str2bool, nargs='?', const=True, default=False, metavar='True|False',
                        help='True (or the bare flag): replace the output folder DATAROOT/<dataset>/<folder> '
                             'when it exists and was made by this tool (it holds splits.json), once the new '
                             'one is complete; nothing else is ever removed. False: an existing one is '
                             'refused (default False)')


def require_dir(path, flag):
    """Raise PrepareError unless ``path`` (given with ``flag``) is an existing folder."""
    if not os.path.isdir(path):
        raise PrepareError(f'{path}: folder not found (given with {flag})')


def take_ids(ids, count, rng):
    """Shuffle sorted ``ids`` with ``rng`` and cut them into consecutive roles.

    ``count`` is a list of (role, n); returns {role: sorted ids} plus ``'rest'`` for what is left.
    Each id lands in exactly one role, which is what keeps a subject or image out of two roles.
    """
    order = [ids[i] for i in rng.permutation(len(ids))]
    roles, start = {}, 0
    for role, n in count:
        roles[role] = sorted(order[start:start + n])
        start += n
    roles['rest'] = sorted(order[start:])
    return roles


def sample(items, n, rng):
    """At most ``n`` of ``items`` drawn without replacement with ``rng``, kept in their given order."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]


def file_stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def find_pairs(images_dir, masks_dir, skipped_suffixes=()):
    """[(id, image path, mask path)] sorted by id, each image ``<id>.<ext>`` of ``images_dir`` (but those
    whose name ends with one of ``skipped_suffixes``) with its mask ``<id>_segmentation.<ext>``
    (any case) of ``masks_dir``; PrepareError when there are no images or no masks, else listing every
    image without its mask, duplicate id, unreadable header and size mismatch."""
    skipped = (MASK_SUFFIX, *skipped_suffixes)
    images = [p for p in list_images(images_dir) if not file_stem(p).lower().endswith(skipped)]
    if not images:
        raise PrepareError(f'{images_dir}: no images found; expected <id>.png or .jpg files')
    masks = {}
    for path in list_images(masks_dir):
        stem = file_stem(path)
        if stem.lower().endswith(MASK_SUFFIX):
            masks.setdefault(stem[:-len(MASK_SUFFIX)], path)
    if not masks:
        raise PrepareError(f'{masks_dir}: no masks found; expected <id>_segmentation.png or <id>_Segmentation.png')
    pairs, seen, problems = [], {}, []
    for path in images:
        image_id = file_stem(path)
        if image_id in seen:
            problems.append(f'{path}: image id {image_id} found twice (also {seen[image_id]}); keep one')
            continue
        seen[image_id] = path
        if image_id not in masks:
            problems.append(f'{path}: image without mask; expected '
                            f'{os.path.join(masks_dir, image_id + MASK_SUFFIX)}.png (or _Segmentation.png)')
            continue
        problem = _header_problem(path, masks[image_id])
        if problem:
            problems.append(problem)
        else:
            pairs.append((image_id, path, masks[image_id]))
    if problems:
        raise PrepareError(problems)
    return pairs


def _header_problem(image_path, mask_path):
    """A problem line when either file's header cannot be read or the two sizes differ, else None.
    Headers only: cheap enough to look at every pair before the first one is decoded."""
    sizes = []
    for path in (image_path, mask_path):
        try:
            with Image.open(path) as img:
                sizes.append(img.size)
                img.verify()
        except PIL_READ_ERRORS as err:
            return f'{path}: not a readable image ({type(err).__name__}: {err}); replace or remove this file'
    (image_w, image_h), (mask_w, mask_h) = sizes
    if (mask_w, mask_h) != (image_w, image_h):
        return f'{mask_path}: mask is {mask_w}x{mask_h} but its image {image_path} is {image_w}x{image_h} (WxH)'
    return None


def resize_pair(image, mask, size):
    """The whole image (Lanczos) and mask (nearest neighbour) resized to ``size`` x ``size``."""
    image = np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS))
    mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    return image, mask


def mask_png(mask):
    """A bool mask as a uint8 0/255 array (written as a mode L PNG)."""
    return np.where(mask, 255, 0).astype(np.uint8)


def write_labelled(split_dir, name, image, mask):
    """Write ``split_dir/images/NAME.png`` and ``split_dir/labels/NAME_segmentation.png``."""
    write_png_atomic(os.path.join(split_dir, 'images', f'{name}.png'), image)
    write_png_atomic(os.path.join(split_dir, 'labels', f'{name}{LABEL_SUFFIX}.png'), mask_png(mask))


def name_weak_folders(folder_dir, files):
    """Rename ``A_weak``/``B_weak`` in ``folder_dir`` to docs/DESIGN.md's ``<N>_A_weak``/``<M>_B_weak``, N and M
    being their file counts, which are only known once all are written; returns ``files`` re-keyed."""
    renamed = {}
    for name, names in files.items():
        if name in ('A_weak', 'B_weak'):
            os.rename(os.path.join(folder_dir, name), os.path.join(folder_dir, f'{len(names)}_{name}'))
            name = f'{len(names)}_{name}'
        renamed[name] = names
    return renamed


def require_filled(source, files, hints):
    """Raise PrepareError naming ``source`` and the first output folder in ``files`` ({folder: [names]})
    left empty, with that folder's entry of ``hints``."""
    for name, names in files.items():
        if not names:
            raise PrepareError(f'{source}: no image for {name}; {hints[name]}')


def _leftovers(dataset_dir, folder):
    """[(kind, path)] of the hidden folders ``staged_folder`` makes for ``folder`` that are in ``dataset_dir``:
    kind 'partial' (being built) or 'old' (the folder it replaces, being swapped out)."""
    if not os.path.isdir(dataset_dir):
        return []
    found = []
    for name in sorted(os.listdir(dataset_dir)):
        path = os.path.join(dataset_dir, name)
        for kind in ('partial', 'old'):
            if name.startswith(f'.{folder}.{kind}-') and os.path.isdir(path) and not os.path.islink(path):
                found.append((kind, path))
    return found


def clear_leftovers(dataset_dir, folder):
    """Deal with what a run killed outright (SIGKILL, power loss) left beside ``<dataset_dir>/<folder>``, and
    say so: a half-built ``.<folder>.partial-*`` is deleted; a ``.<folder>.old-*`` (the earlier folder, being
    replaced) is put back when the new one never got its place, else deleted (it was being replaced)."""
    final = os.path.join(dataset_dir, folder)
    for kind, path in _leftovers(dataset_dir, folder):
        if kind == 'old' and not os.path.lexists(final):
            os.rename(path, final)
            print(f'note: {path}: the earlier {folder}, set aside by an interrupted run, put back as {final}')
        else:
            shutil.rmtree(path)
            what = 'half-built' if kind == 'partial' else 'already replaced'
            print(f'note: {path}: left by an interrupted run ({what}); removed')


def _check_replaceable(final, overwrite):
    """PrepareError unless ``final`` is absent, or with ``overwrite`` a real folder a prepare tool made (it
    holds splits.json): --overwrite never removes a folder of the user's."""
    if not os.path.lexists(final):
        return
    if not overwrite:
        raise PrepareError(f'{final}: output folder exists; pass --overwrite to replace it')
    if os.path.islink(final) or not os.path.isfile(os.path.join(final, 'splits.json')):
        raise PrepareError(f'{final}: not a folder made by tools/prepare_*.py (no splits.json), so --overwrite '
                           f'does not replace it; move it away or pick another --folder')


@contextlib.contextmanager
def staged_folder(dataroot, dataset, folder, overwrite):
    """Yield a hidden temp folder beside ``DATAROOT/<dataset>/<folder>``; on success check its layout
    and rename it onto that path, on any error delete it.

    ``dataset`` and ``folder`` must be one folder name each, so that nothing is written or removed outside
    ``DATAROOT/<dataset>/``. What a killed run left there is cleared first (``clear_leftovers``). An
    existing output folder is refused unless ``overwrite`` (``_check_replaceable``); it is then swapped out
    only once the new one is complete.
    """
    for flag, name in (('--dataset', dataset), ('--folder', folder)):
        error = folder_name_error(flag, name, DATA_FOLDER)
        if error:
            raise PrepareError(error)
    dataset_dir = os.path.join(dataroot, dataset)
    final = os.path.join(dataset_dir, folder)
    clear_leftovers(dataset_dir, folder)
    _check_replaceable(final, overwrite)
    os.makedirs(dataset_dir, exist_ok=True)
    temp_name = f'.{folder}.partial-{uuid.uuid4().hex[:8]}'
    temp = os.path.join(dataset_dir, temp_name)
    os.makedirs(temp)
    try:
        yield temp
        check_training_layout(dataroot, dataset, temp_name)
        for split in EVAL_SPLITS:
            if split == 'val' or os.path.isdir(os.path.join(temp, split)):  # testA/testB are optional
                check_split(temp, split)
        if os.path.exists(final):
            old = os.path.join(dataset_dir, f'.{folder}.old-{uuid.uuid4().hex[:8]}')
            os.rename(final, old)
            os.rename(temp, final)
            shutil.rmtree(old)
        else:
            os.rename(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def write_splits(folder_dir, roles, files, settings, extra=None):
    """Write ``splits.json``: ``train``/``val``/``test`` id lists, the file names of each output
    folder, the settings that decide the content, and any ``extra`` records."""
    record = {role: roles[role] for role in ('train', 'val', 'test')}
    record['files'] = {name: sorted(names) for name, names in files.items()}
    record['settings'] = settings
    record.update(extra or {})
    write_json_atomic(os.path.join(folder_dir, 'splits.json'), record)


def summary_line(dataset, files, out_dir, note=''):
    """One line: the number of files in each output folder, an optional note, and where they went."""
    shown = {name.lstrip('0123456789_'): len(names) for name, names in files.items()}
    counts = ', '.join(f'{shown.get(name, 0)} {name}' for name in ('A_weak', 'B_weak', *EVAL_SPLITS))
    return f'{dataset}: {counts}{note} -> {out_dir}'


def run_cli(run, parser, argv):
    """Parse ``argv``, call ``run(args)`` and print its summary line; input problems exit with one
    ``error:`` line instead of a traceback."""
    args = parser.parse_args(argv)
    check_folder_names(parser, args)
    try:
        print(run(args))
    except (PrepareError, ImageReadError) as err:
        sys.exit(f'error: {err}')
