"""Build the layout train.py and pipeline.py read (docs/DESIGN.md) from your own weakly labelled folders.

    python -m tools.prepare_weak --lesion my/lesion --normal my/normal \\
        --labelled_images my/labelled --labelled_masks my/masks --out mydata --dataset MyLesions

Weak labels are folder-level: every image of --lesion shows a lesion, no image of --normal does. A few
labelled images (--labelled_images, each <id>.png/.jpg with its mask <id>_segmentation.png in
--labelled_masks, non-zero = lesion) are needed to choose with: --n_val of them (shuffled with --seed)
become val, the rest testA, scored once at the end. --n_testB normal images (shuffled with --seed) become
testB instead of training images. Images are resized to --size x --size (the aspect ratio is not kept,
as in the shipped datasets) and written as PNG.

A labelled or testB image must never be trained on: a file whose bytes also appear among the training
images (--lesion, or the normal images kept for training) is refused, naming both files, and so is a file
found both in --lesion and in --normal. Byte-identical labelled images are kept on one side: a copy goes
where its first image (in the shuffled order) went, val or testA: val gets --n_val distinct images. Files
of the same patient in two roles cannot be seen from the bytes: split your folders by patient first.

--dataset and --folder are one folder name each (no / or \\, not '.' or '..'): everything is written
inside --out/<dataset>/<folder>, and --overwrite replaces only that folder, and only when a prepare tool made it.
The folder is built beside its final place (.<folder>.partial-*) and renamed into it only when complete
and checked, so an interrupted run leaves nothing train.py would read; what a killed run left there is
named and removed by the next run. ``splits.json`` records which file went where.
"""
import argparse
import os

import numpy as np
from tqdm import tqdm

from data.image_io import ImageReadError, list_images, read_image, read_mask, write_png_atomic
from options.base_options import default_folder
from tools.prepare_common import (PrepareError, add_output_args, file_stem, find_pairs,
                                  int_at_least, name_weak_folders, positive_int, require_dir, resize_pair,
                                  run_cli, staged_folder, summary_line, write_labelled, write_splits)
from records.record_io import file_sha256


def _images(folder, flag):
    paths = list_images(folder)
    if not paths:
        raise PrepareError(f'{folder}: no images found (given with {flag}); expected .png/.jpg/.bmp/.tif files')
    return paths


def _twins(paths, others, digests):
    """[(path, twin)] for every file of ``paths`` whose bytes (``digests``: path -> sha256) equal a file's of
    ``others``."""
    by_digest = {digests[path]: path for path in others}
    return [(path, by_digest[digests[path]]) for path in paths if digests[path] in by_digest]


def _split_labelled(pairs, n_val, digests):
    """(val, testA) of the shuffled labelled ``pairs``: the first ``n_val`` distinct images and the rest,
    a copy (the same bytes) of an image going to that image's side, so testA never scores again an image
    val chose on (val then holds more than ``n_val`` files)."""
    side, val, test_a, distinct_in_val = {}, [], [], 0
    for pair in pairs:
        digest = digests[pair[1]]
        if digest not in side:
            side[digest] = val if distinct_in_val < n_val else test_a
            distinct_in_val += side[digest] is val
        side[digest].append(pair)
    return val, test_a


def plan(args):
    """{output folder: [(name, image path, mask path or None)]} for parsed ``args``."""
    for flag in ('lesion', 'normal', 'labelled_images', 'labelled_masks'):
        require_dir(getattr(args, flag), f'--{flag}')
    lesion, normal = _images(args.lesion, '--lesion'), _images(args.normal, '--normal')
    pairs = find_pairs(args.labelled_images, args.labelled_masks)
    rng = np.random.RandomState(args.seed)
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    normal = [normal[i] for i in rng.permutation(len(normal))]
    if len(pairs) < args.n_val:
        raise PrepareError(f'{args.labelled_images}: {len(pairs)} labelled images, but --n_val is {args.n_val}; '
                           f'add labelled images or lower --n_val')
    if len(normal) <= args.n_testB:
        raise PrepareError(f'{args.normal}: {len(normal)} normal images leave none to train on with --n_testB '
                           f'{args.n_testB}; lower --n_testB')
    digests = {path: file_sha256(path) for path in lesion + normal + [image for _, image, _ in pairs]}
    both = _twins(sorted(normal), lesion, digests)
    if both:
        raise PrepareError([f'{path}: the same file as the lesion image {twin}; an image is either lesion '
                            f'(--lesion) or normal (--normal): remove one of them' for path, twin in both])
    test_b, train_b = normal[:args.n_testB], normal[args.n_testB:]
    shared = _twins([image for _, image, _ in pairs] + test_b, lesion + train_b, digests)
    if shared:
        raise PrepareError([f'{path}: the same file as the training image {twin}; a held-out image must not be '
                            f'trained on: remove one of them' for path, twin in shared])
    val, test_a = _split_labelled(pairs, args.n_val, digests)
    jobs = {'A_weak': [(f'{file_stem(p)}.png', p, None) for p in lesion],
            'B_weak': [(f'{file_stem(p)}.png', p, None) for p in train_b],
            'val': val, 'testA': test_a,
            'testB': [(f'{file_stem(p)}.png', p, None) for p in test_b]}
    return {folder: sorted(items) for folder, items in jobs.items() if items}


def _check_names(jobs):
    """Two files of one folder with the same stem (a.png, a.jpg) would overwrite each other."""
    problems = []
    for folder, items in jobs.items():
        seen = {}
        for name, path, _ in items:
            if name in seen:
                problems.append(f'{path}: same name as {seen[name]} once written as {name} in {folder}; rename one')
            seen[name] = path
    if problems:
        raise PrepareError(problems)


def _write(jobs, folder, size):
    """Write every planned file under ``folder``; returns {output folder: [file names]}."""
    files, unreadable = {name: [] for name in jobs}, []
    with tqdm(total=sum(map(len, jobs.values())), desc='images', unit='img') as bar:
        for split, items in jobs.items():
            for name, image_path, mask_path in items:
                bar.update()
                try:
                    image = read_image(image_path)
                    mask = read_mask(mask_path) if mask_path else np.zeros(image.shape[:2], np.uint8)
                except ImageReadError as err:
                    unreadable.append(str(err))  # go on, to list every unreadable file at once
                    continue
                image, mask = resize_pair(image, mask, size)
                if mask_path:
                    write_labelled(os.path.join(folder, split), name, image, mask > 0)
                    files[split].append(f'{name}.png')
                else:
                    write_png_atomic(os.path.join(folder, split, name), image)
                    files[split].append(name)
    if unreadable:
        raise PrepareError(unreadable)
    return files


def run(args):
    """Build the layout for parsed ``args``; returns the summary line."""
    folder = args.folder or default_folder(args.dataset)
    jobs = plan(args)
    _check_names(jobs)
    with staged_folder(args.out, args.dataset, folder, args.overwrite) as temp:
        files = name_weak_folders(temp, _write(jobs, temp, args.size))
        by_role = {'train': ('A_weak', 'B_weak'), 'val': ('val',), 'test': ('testA', 'testB')}
        roles = {role: sorted(name for key, names in files.items() if key.lstrip('0123456789_') in keys
                              for name in names) for role, keys in by_role.items()}
        settings = {'size': args.size, 'seed': args.seed, 'n_val': args.n_val, 'n_testB': args.n_testB}
        write_splits(temp, roles, files, settings)
    return summary_line(args.dataset, files, os.path.join(args.out, args.dataset, folder))


def build_parser():
    """The argparse parser of this tool; every flag explained in --help."""
    parser = argparse.ArgumentParser(prog='python -m tools.prepare_weak', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--lesion', required=True, help='folder of images that show a lesion (image-level label)')
    parser.add_argument('--normal', required=True, help='folder of images without a lesion')
    parser.add_argument('--labelled_images', required=True,
                        help='folder of a few lesion images <id>.png/.jpg with pixel masks, never trained on')
    parser.add_argument('--labelled_masks', required=True,
                        help='folder of their masks <id>_segmentation.png (non-zero = lesion, same size as the image)')
    parser.add_argument('--dataset', required=True,
                        help='dataset name: one folder name, the folder under --out (pipeline.py --dataset)')
    add_output_args(parser, None)
    parser.add_argument('--n_val', type=positive_int, default=50,
                        help='labelled images for val, which every choice is made on (20-50 or more); the rest '
                             'become testA, scored once; a copy (the same bytes) of an image goes to its side '
                             '(default %(default)s)')
    parser.add_argument('--n_testB', type=int_at_least(0), default=0,
                        help='normal images held out of training as testB, to count false lesions on '
                             '(default %(default)s: none)')
    return parser


def main(argv=None):
    """Command-line entry point."""
    run_cli(run, build_parser(), argv)


if __name__ == '__main__':
    main()
