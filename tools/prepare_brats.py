"""Build the weak-label BraTS layout (docs/DESIGN.md) from an official BraTS download.

    python -m tools.prepare_brats --src MICCAI_BraTS2020_TrainingData --out DATAROOT [--folder brats_1]

Reads, anywhere under --src, subjects named as in BraTS 2018-2021 (``<ID>/<ID>_flair.nii.gz`` with
``<ID>_seg.nii.gz``, also ``.nii``) and the Medical Segmentation Decathlon's Task01 (4-D
``imagesTr/BRATS_XXX.nii.gz`` with ``labelsTr/BRATS_XXX.nii.gz``). The rules follow
shared/datasets/SOURCES.md:

- subjects are split into val / test / train (never one subject in two roles);
- per volume, brain = non-zero voxels; ``hi`` = 99.5th percentile of the brain, ``lo`` = 0 (or the
  0.5th percentile when the volume is z-scored), voxel -> clip((x - lo) / (hi - lo)) * 255, 0 outside;
- axial slice ``volume[:, :, z].T`` with brain area above --min_brain_frac of the slice: A when its
  whole tumour (labels > 0) has >= --min_lesion_px pixels, B when none, skipped in between;
- zero-padded to --size (240 -> 256, no interpolation), gray copied into 3 channels; masks 0/255.

Normalisation and slice geometry live in data/brats.py, which predict.py applies to a user's volume.

Slices are named ``<ID>_<modality>_<zzz>.png`` (z = axial index); ``splits.json`` lists the subjects
of each role.
"""
import argparse
import os
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

import nibabel as nib

from data.brats import (BRATS_FILE, MIN_BRAIN_FRAC, MODALITIES, NIFTI_ERRORS, enough_brain, normalise,
                        slice_image, slice_mask)
from data.image_io import write_png_atomic
from tools.prepare_common import (PrepareError, add_output_args, positive_int, require_dir,
                                  name_weak_folders, require_filled, run_cli, sample, staged_folder,
                                  summary_line, take_ids, write_labelled, write_splits)

MSD_CHANNEL = {'flair': 0, 't1': 1, 't1ce': 2, 't2': 3}  # MSD order: FLAIR, T1w, t1gd, T2w
NAMINGS = ('<ID>/<ID>_<modality>.nii.gz with <ID>_seg.nii.gz (BraTS 2018-2021), or '
           'imagesTr/BRATS_XXX.nii.gz with labelsTr/BRATS_XXX.nii.gz (Decathlon Task01)')


@dataclass(frozen=True)
class Subject:
    """One subject: its image file (``channel`` set for a 4-D MSD file) and its tumour label file."""
    id: str
    image: str
    seg: str
    channel: int = None


def _msd_subjects(images_dir, modality, problems):
    """Subjects of a Decathlon ``imagesTr`` folder, each paired with ``../labelsTr/<same name>``; a line
    in the list ``problems`` for each image without its label."""
    labels_dir = os.path.join(os.path.dirname(images_dir), 'labelsTr')
    subjects = []
    # Hidden '._BRATS_001.nii.gz' files are macOS metadata shipped inside the Task01 archive.
    for name in sorted(n for n in os.listdir(images_dir) if n.endswith(('.nii', '.nii.gz'))
                       and not n.startswith('.')):
        seg = os.path.join(labels_dir, name)
        if not os.path.isfile(seg):
            problems.append(f'{os.path.join(images_dir, name)}: no label file; expected {seg}')
            continue
        subjects.append(Subject(re.sub(r'\.nii(\.gz)?$', '', name), os.path.join(images_dir, name), seg,
                                MSD_CHANNEL[modality]))
    return subjects


def _brats_subject(folder, subject_id, kinds, modality):
    """The Subject of the BraTS 2018-2021 files ``kinds`` ({kind: name}) of ``subject_id`` in ``folder``."""
    for kind in (modality, 'seg'):
        if kind not in kinds:
            raise PrepareError(f'{folder}: subject {subject_id} has no {subject_id}_{kind}.nii.gz '
                               f'(found {", ".join(sorted(kinds.values()))})')
    return Subject(subject_id, os.path.join(folder, kinds[modality]), os.path.join(folder, kinds['seg']))


def find_subjects(src, modality):
    """All subjects under ``src`` in either naming, sorted by id; PrepareError when none, else listing
    every subject that lacks its ``modality`` or seg file and every id that occurs twice."""
    subjects, problems = [], []
    for folder, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        if os.path.basename(folder) == 'imagesTr':
            subjects += _msd_subjects(folder, modality, problems)
            continue
        groups = defaultdict(dict)
        for name in files:
            match = BRATS_FILE.match(name)
            if match:
                groups[match['id']][match['kind']] = name
        for sid, kinds in sorted(groups.items()):
            try:
                subjects.append(_brats_subject(folder, sid, kinds, modality))
            except PrepareError as err:
                problems.append(str(err))
    if not subjects and not problems:
        raise PrepareError(f'{src}: no BraTS subjects found; expected {NAMINGS}')
    seen = {}
    for subject in subjects:
        if subject.id in seen:
            problems.append(f'subject {subject.id} found twice: {seen[subject.id]} and {subject.image}')
        seen[subject.id] = subject.image
    if problems:
        raise PrepareError(problems)
    return sorted(subjects, key=lambda s: s.id)


def _read_nifti(path, channel=None):
    """A NIfTI file as float32 array (channel ``channel`` of a 4-D file); PrepareError when unreadable."""
    try:
        image = nib.load(path)
        if channel is None:
            return np.asarray(image.dataobj, dtype=np.float32)
        if len(image.shape) != 4 or image.shape[3] <= channel:
            raise PrepareError(f'{path}: expected a 4-D volume with 4 modalities (FLAIR, T1w, t1gd, T2w), '
                               f'got shape {image.shape}')
        return np.asarray(image.dataobj[..., channel], dtype=np.float32)
    except NIFTI_ERRORS as err:
        raise PrepareError(f'{path}: cannot read NIfTI ({type(err).__name__}: {err})') from None


def load_subject(subject):
    """(image volume float32, whole-tumour bool volume), both X x Y x Z; PrepareError on bad files."""
    volume = _read_nifti(subject.image, subject.channel)
    tumour = _read_nifti(subject.seg) > 0
    if volume.ndim != 3 or volume.shape != tumour.shape:
        raise PrepareError(f'{subject.seg}: mask shape {tumour.shape} differs from image shape '
                           f'{volume.shape} ({subject.image})')
    return volume, tumour


def classify_slices(volume, tumour, min_lesion_px, min_brain_frac):
    """(A z-indices, B z-indices): slices with brain area above ``min_brain_frac`` of the slice and
    whole tumour >= ``min_lesion_px`` pixels (A) or none (B); those in between are in neither."""
    lesion_px = tumour.sum(axis=(0, 1))
    brain = enough_brain(volume, min_brain_frac)
    lesion_z = np.flatnonzero(brain & (lesion_px >= min_lesion_px))
    normal_z = np.flatnonzero(brain & (lesion_px == 0))
    return lesion_z.tolist(), normal_z.tolist()


def _select_slices(args, subjects, rng):
    """Split subjects into roles and sample slices; returns (roles, {output folder: [(id, z)]}).
    PrepareError listing every subject whose files cannot be read or whose shapes differ."""
    roles = take_ids([s.id for s in subjects], [('val', args.n_val), ('test', args.n_test)], rng)
    roles['train'] = roles.pop('rest')
    if not roles['train']:
        raise PrepareError(f'{args.src}: found {len(subjects)} subjects; --n_val {args.n_val} and '
                           f'--n_test {args.n_test} leave none for training')
    role_of = {sid: role for role, ids in roles.items() for sid in ids}
    candidates, unreadable = defaultdict(list), []
    for subject in tqdm(subjects, desc='scan subjects', unit='subject'):
        try:
            volume, tumour = load_subject(subject)
        except PrepareError as err:
            unreadable.append(str(err))  # go on, to list every bad subject at once
            continue
        lesion_z, normal_z = classify_slices(volume, tumour, args.min_lesion_px, args.min_brain_frac)
        candidates[role_of[subject.id], 'A'] += [(subject.id, z) for z in lesion_z]
        candidates[role_of[subject.id], 'B'] += [(subject.id, z) for z in normal_z]
    if unreadable:
        raise PrepareError(unreadable)
    plan = {'A_weak': sample(candidates['train', 'A'], args.n_a, rng),
            'B_weak': sample(candidates['train', 'B'], args.n_b, rng),
            'val': sample(candidates['val', 'A'], args.n_val_slices, rng),
            'testA': sample(candidates['test', 'A'], args.n_testA, rng),
            'testB': sample(candidates['test', 'B'], args.n_testB, rng)}
    rules = 'lower --min_lesion_px or --min_brain_frac'
    require_filled(args.src, plan, {
        'A_weak': f'no lesion slice in the train subjects; {rules}',
        'B_weak': 'no tumour-free slice in the train subjects; lower --min_brain_frac',
        'val': f'no lesion slice in the val subjects; raise --n_val or {rules}',
        'testA': f'no lesion slice in the test subjects; raise --n_test or {rules}',
        'testB': 'no tumour-free slice in the test subjects; raise --n_test or lower --min_brain_frac'})
    return roles, plan


def _write_slices(args, subjects, plan, folder_dir):
    """Write the planned slices ({output folder: [(id, z)]}) under ``folder_dir``; returns file names."""
    todo = defaultdict(list)
    for folder, items in plan.items():
        for sid, z in items:
            todo[sid].append((z, folder))
    files = {folder: [] for folder in plan}
    for subject in tqdm([s for s in subjects if s.id in todo], desc='write slices', unit='subject'):
        volume, tumour = load_subject(subject)
        scaled = normalise(volume)
        for z, folder in sorted(todo[subject.id]):
            name = f'{subject.id}_{args.modality}_{z:03d}'
            image = slice_image(scaled, z, args.size)
            if folder in ('val', 'testA'):
                write_labelled(os.path.join(folder_dir, folder), name, image, slice_mask(tumour, z, args.size))
            else:
                write_png_atomic(os.path.join(folder_dir, folder, f'{name}.png'), image)
            files[folder].append(f'{name}.png')
    return name_weak_folders(folder_dir, files)


def run(args):
    """Build the layout for parsed ``args``; returns the summary line."""
    require_dir(args.src, '--src')
    subjects = find_subjects(args.src, args.modality)
    with staged_folder(args.out, 'BraTS', args.folder, args.overwrite) as temp:
        roles, plan = _select_slices(args, subjects, np.random.RandomState(args.seed))
        files = _write_slices(args, subjects, plan, temp)
        settings = {k: getattr(args, k) for k in ('src', 'modality', 'min_lesion_px', 'min_brain_frac', 'size',
                                                  'seed', 'n_val', 'n_test', 'n_a', 'n_b', 'n_val_slices',
                                                  'n_testA', 'n_testB')}
        write_splits(temp, roles, files, settings)
    note = (f' from {len(subjects)} subjects ({len(roles["train"])} train, {len(roles["val"])} val, '
            f'{len(roles["test"])} test)')
    return summary_line('BraTS', files, os.path.join(args.out, 'BraTS', args.folder), note)


def _fraction(text):
    """argparse type: a float in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f'expected a fraction in [0, 1), got {text}')
    return value


def build_parser():
    """The argparse parser of this tool; every flag explained in --help."""
    parser = argparse.ArgumentParser(prog='python -m tools.prepare_brats', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--src', required=True,
                        help=f'folder holding the BraTS subjects, searched recursively: {NAMINGS}')
    add_output_args(parser, 'brats_1')
    parser.add_argument('--modality', choices=MODALITIES, default='flair',
                        help='MRI sequence to export (MSD channels: flair=0, t1=1, t1ce=2, t2=3; default %(default)s)')
    parser.add_argument('--min_lesion_px', type=positive_int, default=300,
                        help='whole-tumour pixels (at the volume\'s own slice size, 240x240 for BraTS) '
                             'a slice needs to be a lesion (A) slice; slices with 1 to this-1 are skipped '
                             '(default %(default)s)')
    parser.add_argument('--min_brain_frac', type=_fraction, default=MIN_BRAIN_FRAC,
                        help='slices whose brain area is not above this fraction of the slice are skipped '
                             '(default %(default)s)')
    parser.add_argument('--n_val', type=positive_int, default=3, help='subjects for val (default %(default)s)')
    parser.add_argument('--n_test', type=positive_int, default=5,
                        help='subjects for testA/testB (default %(default)s); the other subjects train')
    parser.add_argument('--n_a', type=positive_int, default=500,
                        help='at most this many lesion slices of train subjects in <N>_A_weak (default %(default)s)')
    parser.add_argument('--n_b', type=positive_int, default=500,
                        help='at most this many tumour-free slices of train subjects in <M>_B_weak '
                             '(default %(default)s)')
    parser.add_argument('--n_val_slices', type=positive_int, default=50,
                        help='at most this many lesion slices of val subjects in val (default %(default)s)')
    parser.add_argument('--n_testA', type=positive_int, default=100,
                        help='at most this many lesion slices of test subjects in testA (default %(default)s)')
    parser.add_argument('--n_testB', type=positive_int, default=50,
                        help='at most this many tumour-free slices of test subjects in testB (default %(default)s)')
    return parser


def main(argv=None):
    """Command-line entry point."""
    run_cli(run, build_parser(), argv)


if __name__ == '__main__':
    main()
