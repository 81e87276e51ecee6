"""What predict.py is asked to segment: the images and NIfTI volumes under its --input, the files each
one's outputs go to, and the label each is scored against (--labels).

Every problem found here is a SystemExit with one line naming the path and the fix, raised before any
model runs.
"""
import os
import re
from dataclasses import dataclass

import numpy as np

from data.brats import BRATS_FILE
from data.image_io import IMG_EXTENSIONS, is_image_file
from data.layout import LABEL_SUFFIX

NIFTI = re.compile(r'\.nii(\.gz)?$', re.IGNORECASE)
# Work bounds per input (predict.py --max_megapixels, --max_megavoxels, --min_slice_side): a 144-megapixel PNG
# of 168 KB took 4.6 GB and 111 s, a 1x1x500 volume over 300 s, on 2 cores.
MAX_MEGAPIXELS = 40.0  # a 6000x4000 photograph (the ISIC originals' size) is 24
MAX_MEGAVOXELS = 100.0  # a BraTS volume (240x240x155) is 8.9
MIN_SLICE_SIDE = 32
FOUND = ('images (PNG/JPG/BMP/TIFF) or NIfTI volumes (.nii, .nii.gz, BraTS subject folders '
         '<ID>/<ID>_flair.nii.gz)')


@dataclass(frozen=True)
class Input:
    """One file to segment: ``kind`` 'image' or 'volume'; ``name`` its path relative to --input without the
    extension (its outputs are ``<output>/<name>_mask.png`` and so on)."""
    path: str
    kind: str
    name: str

    def output(self, out_dir, what):
        """The file of output ``what`` ('mask', 'prob', 'overlay'): PNG for images (and overlays), NIfTI for volumes."""
        ext = '.nii.gz' if self.kind == 'volume' and what != 'overlay' else '.png'
        return os.path.join(out_dir, f'{self.name}_{what}{ext}')


def _stem(filename):
    """A file name without its extension ('.nii.gz' counts as one)."""
    return NIFTI.sub('', filename) if NIFTI.search(filename) else os.path.splitext(filename)[0]


def _kind(filename):
    """'image', 'volume', or None for a file predict.py leaves out: not an image or NIfTI, a
    ``_segmentation`` mask, a BraTS label or a BraTS sequence other than FLAIR."""
    if NIFTI.search(filename) and not filename.startswith('.'):
        brats = BRATS_FILE.match(filename)
        return 'volume' if brats is None or brats['kind'] == 'flair' else None
    if is_image_file(filename) and not _stem(filename).lower().endswith(LABEL_SUFFIX):
        return 'image'
    return None


def _files(root, recursive):
    """Paths under folder ``root``: its files, the FLAIR of each subject folder <ID>/<ID>_flair.nii(.gz)
    directly inside it, and with ``recursive`` every file of every subfolder (hidden ones left out)."""
    if recursive:
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            yield from (os.path.join(folder, name) for name in sorted(names))
        return
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if os.path.isfile(path):
            yield path
        elif os.path.isdir(path) and not entry.startswith('.'):
            yield from (os.path.join(path, f'{entry}_flair{ext}') for ext in ('.nii.gz', '.nii')
                        if os.path.isfile(os.path.join(path, f'{entry}_flair{ext}')))


def find_inputs(path, recursive):
    """[Input] for --input ``path`` (a file or a folder), sorted; SystemExit when there is none, or when two
    would write the same output."""
    if os.path.isfile(path):
        kind = 'volume' if NIFTI.search(path) else 'image' if is_image_file(path) else None
        if kind is None:
            raise SystemExit(f'error: {path} is not an image ({", ".join(IMG_EXTENSIONS)}) or a NIfTI volume '
                             f'(.nii, .nii.gz); pass one of those, or a folder of them')
        return [Input(path, kind, _stem(os.path.basename(path)))]
    if not os.path.isdir(path):
        raise SystemExit(f'error: --input {path} not found; pass an image, a NIfTI volume or a folder of them')
    inputs = [Input(file, _kind(os.path.basename(file)), _stem(os.path.relpath(file, path)))
              for file in _files(path, recursive) if _kind(os.path.basename(file))]
    if not inputs:
        has_folders = any(os.path.isdir(os.path.join(path, entry)) for entry in os.listdir(path))
        hint = '; pass --recursive to search its subfolders' if has_folders and not recursive else ''
        raise SystemExit(f'error: {path}: no {FOUND} found{hint}')
    owners = {}
    for item in inputs:
        if item.name in owners:
            raise SystemExit(f'error: {owners[item.name]} and {item.path} would both write {item.name}_mask; '
                             f'rename one of them')
        owners[item.name] = item.path
    return inputs


def _label_names(item):
    """File names (lower case) a label of ``item`` may have, best first."""
    stem = os.path.basename(item.name)
    if item.kind == 'image':
        return [f'{stem}{LABEL_SUFFIX}{ext}' for ext in IMG_EXTENSIONS] + [f'{stem}{ext}' for ext in IMG_EXTENSIONS]
    brats = BRATS_FILE.match(f'{stem}.nii.gz')
    subject = brats['id'] if brats else stem
    return [f'{subject}_seg{ext}' for ext in ('.nii.gz', '.nii')] + [f'{stem}{ext}' for ext in ('.nii.gz', '.nii')]


def find_labels(inputs, labels):
    """{input path: label path} for --labels ``labels`` (a file, for one input; or a folder searched with its
    subfolders), for the inputs that have one; SystemExit naming the first input when none has."""
    if os.path.isfile(labels):
        if len(inputs) != 1:
            raise SystemExit(f'error: --labels {labels} is one file but --input holds {len(inputs)} files; '
                             f'pass a folder of labels')
        return {inputs[0].path: labels}
    if not os.path.isdir(labels):
        raise SystemExit(f'error: --labels {labels} not found; pass a mask file or a folder of labels')
    index = {}
    for folder, dirs, names in os.walk(labels):
        dirs[:] = sorted(dirs)
        for name in sorted(names):
            index.setdefault(name.lower(), os.path.join(folder, name))
    found = {}
    for item in inputs:
        names = _label_names(item)
        match = next((index[name.lower()] for name in names if name.lower() in index
                      and os.path.realpath(index[name.lower()]) != os.path.realpath(item.path)), None)
        if match is not None:
            found[item.path] = match
    if not found:
        names = _label_names(inputs[0])
        raise SystemExit(f'error: no label for {inputs[0].path} in {labels}: expected {names[0]} there; add it, '
                         f'or leave out --labels')
    return found


def size_problem(item, size, opt):
    """Why ``item`` of ``size`` ((H, W) of an image, (X, Y, Z) of a volume, from its header) is too much work
    to predict under --max_megapixels, --max_megavoxels and --min_slice_side (one line), else None."""
    count = int(np.prod(size, dtype=np.float64))
    if item.kind == 'image':
        if count > opt.max_megapixels * 1e6:
            return (f'{size[1]}x{size[0]} px is {count / 1e6:.0f} megapixels, above --max_megapixels '
                    f'{opt.max_megapixels:g} (memory and time grow with it); shrink it, or raise --max_megapixels')
        return None
    if count > opt.max_megavoxels * 1e6:
        return (f'{"x".join(map(str, size))} voxels is {count / 1e6:.0f} megavoxels, above --max_megavoxels '
                f'{opt.max_megavoxels:g} (memory and time grow with it); crop or resample it, or raise '
                f'--max_megavoxels')
    if min(size[:2]) < opt.min_slice_side:
        return (f'its axial slices are {size[0]}x{size[1]} voxels, smaller than --min_slice_side '
                f'{opt.min_slice_side} (BraTS: 240x240): each slice costs a 256 px prediction; pass a volume of '
                f'whole axial slices, or lower --min_slice_side')
    return None
