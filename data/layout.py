"""Find and check the dataset folders before any training or testing starts.

Every checker collects all problems it finds and reports them together in one ``LayoutError``
(one line per problem: the path, then what was expected), so a user fixes a dataset in one pass.
With ``skip_bad=True`` the per-file problems (unreadable file, image without label, size mismatch,
...) are returned in ``skipped`` instead, and only the good files are kept; problems with the
folders themselves always raise.

Layout (see docs/DESIGN.md)::

    <dataroot>/<dataset>/<folder>/<N>_A_weak/, <M>_B_weak/, val/{images,labels}/,
                                  testA/{images,labels}/, testB/ (or testB/images/)
"""
import os
import re
from dataclasses import dataclass, field

from PIL import Image

from data.image_io import IMG_EXTENSIONS, PIL_READ_ERRORS, list_images

LABEL_SUFFIX = '_segmentation'
UNLABELED_SPLITS = ('testB',)


@dataclass(frozen=True)
class Problem:
    """One layout problem: the offending ``path`` and what was expected there."""
    path: str
    expected: str

    def __str__(self):
        return f'{self.path}: {self.expected}'


class LayoutError(Exception):
    """The dataset layout is wrong; ``problems`` lists every problem found, one per message line.
    ``skippable``: every problem is a per-file one, which ``skip_bad=True`` would leave out."""

    def __init__(self, problems, skippable=False):
        self.problems = list(problems)
        self.skippable = skippable
        count = len(self.problems)
        lines = '\n'.join(f'  {p}' for p in self.problems)
        super().__init__(f'{count} dataset layout problem{"s" if count != 1 else ""} found:\n{lines}')

    def __reduce__(self):
        # Rebuild from the problems, not from the message, when sent between processes.
        return type(self), (self.problems, self.skippable)


@dataclass
class TrainingFiles:
    """Result of ``check_training_layout``: the two weak-label folders and their usable images.

    Unpacks as ``dir_A, dir_B = check_training_layout(...)``.
    """
    dir_A: str
    dir_B: str
    paths_A: list
    paths_B: list
    skipped: list = field(default_factory=list)

    def __iter__(self):
        return iter((self.dir_A, self.dir_B))


@dataclass
class SplitFiles:
    """Result of ``check_split``: ``pairs`` of (image_path, label_path or None), ``skipped`` problems.

    Behaves as the list of pairs (iteration, ``len``, indexing).
    """
    pairs: list
    skipped: list = field(default_factory=list)

    def __iter__(self):
        return iter(self.pairs)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.pairs[index]


def _subfolders(folder):
    """Sorted names of the visible subfolders of ``folder``."""
    return sorted(name for name in os.listdir(folder)
                  if not name.startswith('.') and os.path.isdir(os.path.join(folder, name)))


def _weak_folders(folder_dir):
    """(dir_A or None, dir_B or None, problems) for the ``*_A_weak`` / ``*_B_weak`` subfolders."""
    names = _subfolders(folder_dir)
    found, problems = [], []
    for side, meaning in (('A', 'training images with a lesion'), ('B', 'training images without a lesion')):
        matches = [n for n in names if n.endswith(f'_{side}_weak')]
        if len(matches) == 1:
            found.append(os.path.join(folder_dir, matches[0]))
            continue
        found.append(None)
        what = 'found none' if not matches else 'found several: ' + ', '.join(matches)
        problems.append(Problem(folder_dir, f'expected exactly one subfolder <N>_{side}_weak '
                                            f'({meaning}, e.g. 500_{side}_weak), {what}'))
    return found[0], found[1], problems


def find_weak_folders(folder_dir):
    """Return (dir_A, dir_B): the single ``*_A_weak`` and ``*_B_weak`` subfolders of ``folder_dir``."""
    dir_A, dir_B, problems = _weak_folders(str(folder_dir))
    if problems:
        raise LayoutError(problems)
    return dir_A, dir_B


def _label_index(labels_dir):
    """Map NAME -> [label paths] for the files ``NAME_segmentation.<ext>`` (suffix any case) in ``labels_dir``."""
    index = {}
    for path in list_images(labels_dir):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem.lower().endswith(LABEL_SUFFIX):
            index.setdefault(stem[:-len(LABEL_SUFFIX)], []).append(path)
    return index


def label_path_for(image_path, labels_dir):
    """Path of the label of ``image_path`` in ``labels_dir`` (``NAME.png`` -> ``NAME_segmentation.<ext>``,
    also ``_Segmentation``), or None when there is none."""
    stem = os.path.splitext(os.path.basename(str(image_path)))[0]
    matches = _label_index(str(labels_dir)).get(stem, [])
    return matches[0] if matches else None


def few_shot_pairs(folder_dir, name):
    """[(image, mask)] of the labelled folder ``few_sample/<name>`` (``A/NAME.png`` images,
    ``B/NAME_segmentation.png`` masks); SystemExit naming the folder or the first image without a mask."""
    images_dir = os.path.join(folder_dir, 'few_sample', name, 'A')
    labels_dir = os.path.join(folder_dir, 'few_sample', name, 'B')
    if not os.path.isdir(images_dir) or not os.path.isdir(labels_dir):
        raise SystemExit(f'error: few-shot folder {images_dir} (images) or {labels_dir} (NAME_segmentation.png '
                         f'masks) not found; check --few_sample / --select_few or leave it empty')
    pairs = [(image, label_path_for(image, labels_dir)) for image in list_images(images_dir)]
    unlabelled = [image for image, label in pairs if label is None]
    if unlabelled or not pairs:
        detail = f'{len(unlabelled)} image(s) without a mask, e.g. {unlabelled[0]}' if unlabelled else 'no images'
        raise SystemExit(f'error: few-shot folder {images_dir}: {detail}; add NAME_segmentation.png to {labels_dir}')
    return pairs


def hold_out_spec(record):
    """How a run held normal images out of stage-2 training, from its options or a selection record that
    copied them: {'hold_out_normals': N} and, when it held out whole patients, 'hold_out_group' (the keyword
    arguments of ``held_out_normals``)."""
    spec = {'hold_out_normals': record.get('hold_out_normals') or 0}
    if record.get('hold_out_group'):
        spec['hold_out_group'] = record['hold_out_group']
    return spec


def image_group(path, pattern):
    """The patient (or other group) a file name belongs to: the first group of regular expression
    ``pattern`` found in the name, else its whole match; LayoutError naming the file when it has none."""
    match = re.search(pattern, os.path.basename(path))
    if not match:
        raise LayoutError([Problem(path, f'its name does not match --hold_out_group {pattern!r}, which names the '
                                         f'patient of every normal training image; fix the pattern')])
    return match.group(1) if match.groups() else match.group(0)


def held_out_normals(folder_dir, hold_out_normals=0, hold_out_group=''):
    """The normal images of the <M>_B_weak folder of ``folder_dir`` that train.py --hold_out_normals leaves out
    of stage-2 training, for test.py and crf.py to choose the image-level gate on: the last
    ``hold_out_normals`` by sorted file name or, with ``hold_out_group``, every image of the last patients by
    sorted ID until there are at least that many, so the gate is judged on patients stage 2 never saw
    (slices of a patient resemble each other). [] for 0; LayoutError when there is no single B_weak folder."""
    if not hold_out_normals:
        return []
    paths = list_images(find_weak_folders(folder_dir)[1])
    if not hold_out_group:
        return paths[-hold_out_normals:]
    groups = {}
    for path in paths:
        groups.setdefault(image_group(path, hold_out_group), []).append(path)
    held = []
    for name in sorted(groups, reverse=True):
        if len(held) >= hold_out_normals:
            break
        held += groups[name]
    return sorted(held)


def header_size(path):
    """(size, None) for a readable image header, else (None, Problem). ``verify`` checks the file cheaply."""
    try:
        with Image.open(path) as img:
            size = img.size
            img.verify()
        return size, None
    except PIL_READ_ERRORS as err:
        return None, Problem(path, f'expected a readable image, got {type(err).__name__}: {err} '
                                   f'(replace or remove this file)')


def _scan_images(folder, verify_images):
    """Look at the images directly in ``folder``.

    Returns (sizes, unreadable, empty): ``sizes`` maps each readable image path to its (W, H)
    (None when not verified), ``unreadable`` lists per-file Problems, ``empty`` is a Problem when
    the folder holds no image file at all, else None.
    """
    paths = list_images(folder)
    if not paths:
        return {}, [], Problem(folder, f'expected image files ({" ".join(IMG_EXTENSIONS)}), found none')
    if not verify_images:
        return dict.fromkeys(paths), [], None
    sizes, unreadable = {}, []
    for path in paths:
        size, problem = header_size(path)
        if problem is None:
            sizes[path] = size
        else:
            unreadable.append(problem)
    return sizes, unreadable, None


def _raise_or_skip(fatal, per_file, skip_bad):
    """Raise for folder-level problems always, and for per-file ones unless ``skip_bad``."""
    if fatal or (per_file and not skip_bad):
        raise LayoutError(fatal + per_file, skippable=not fatal)


def check_training_layout(dataroot, dataset, folder, verify_images=True, skip_bad=False):
    """Check ``<dataroot>/<dataset>/<folder>`` holds the two weak-label folders with readable images.

    Returns a ``TrainingFiles`` (unpacks as ``(dir_A, dir_B)``); raises ``LayoutError`` listing every
    problem. With ``skip_bad`` unreadable images are left out of ``paths_A``/``paths_B`` and listed
    in ``skipped`` instead of raising.
    """
    dataroot = str(dataroot)
    if not os.path.isdir(dataroot):
        raise LayoutError([Problem(dataroot, 'expected the folder that holds the datasets; '
                                             'pass it with --dataroot')])
    dataset_dir = os.path.join(dataroot, dataset)
    if not os.path.isdir(dataset_dir):
        existing = ', '.join(_subfolders(dataroot)) or 'none'
        raise LayoutError([Problem(dataset_dir, f'dataset not found; datasets in {dataroot}: {existing} '
                                                f'(pick one with --dataset)')])
    folder_dir = os.path.join(dataset_dir, folder)
    if not os.path.isdir(folder_dir):
        existing = ', '.join(_subfolders(dataset_dir)) or 'none'
        raise LayoutError([Problem(folder_dir, f'folder not found; folders in {dataset_dir}: {existing} '
                                               f'(pick one with --folder)')])
    dir_A, dir_B, fatal = _weak_folders(folder_dir)
    per_file, paths = [], {}
    for weak_dir in (dir_A, dir_B):
        if weak_dir is None:
            continue
        sizes, unreadable, empty = _scan_images(weak_dir, verify_images)
        per_file += unreadable
        if empty:
            fatal.append(empty)
        elif not sizes:
            fatal.append(Problem(weak_dir, 'expected at least one readable image, none could be read'))
        paths[weak_dir] = list(sizes)
    _raise_or_skip(fatal, per_file, skip_bad)
    return TrainingFiles(dir_A, dir_B, paths[dir_A], paths[dir_B], per_file)


def _split_dirs(split_dir, with_labels):
    """(images_dir, labels_dir or None, problems) for one split folder."""
    nested = os.path.join(split_dir, 'images')
    if os.path.isdir(nested):
        images_dir = nested
    elif not with_labels:
        images_dir = split_dir  # testB keeps its images directly in the split folder
    else:
        return None, None, [Problem(nested, 'expected a folder of images (NAME.png)')]
    if not with_labels:
        return images_dir, None, []
    labels_dir = os.path.join(split_dir, 'labels')
    if not os.path.isdir(labels_dir):
        return images_dir, None, [Problem(labels_dir, 'expected a folder of masks (NAME_segmentation.png)')]
    return images_dir, labels_dir, []


def check_split(folder_dir, split, need_labels=True, verify_images=True, skip_bad=False):
    """Check one evaluation split and pair each image with its label.

    ``val``/``testA``: ``<split>/images/NAME.<ext>`` with ``<split>/labels/NAME_segmentation.<ext>``;
    ``testB``: images directly in ``testB/`` (or ``testB/images/``), never labels. With
    ``need_labels=False`` labels are not looked at (pairs hold None). Returns a ``SplitFiles``;
    raises ``LayoutError`` listing every problem (missing or empty folder, image without label,
    label without image, unreadable file, label size differing from its image). With ``skip_bad``
    per-file problems go to ``skipped`` and the affected images are left out.
    """
    split_dir = os.path.join(str(folder_dir), split)
    if not os.path.isdir(folder_dir):
        raise LayoutError([Problem(str(folder_dir), 'dataset folder not found; check --dataroot, --dataset '
                                                    'and --folder')])
    if not os.path.isdir(split_dir):
        raise LayoutError([Problem(split_dir, f'expected the {split} split folder')])
    with_labels = need_labels and split not in UNLABELED_SPLITS
    images_dir, labels_dir, fatal = _split_dirs(split_dir, with_labels)
    if fatal:
        raise LayoutError(fatal)
    sizes, per_file, empty = _scan_images(images_dir, verify_images)
    if empty:
        raise LayoutError([empty])
    if not with_labels:
        pairs = [(path, None) for path in sizes]
    else:
        pairs = _pair_labels(images_dir, labels_dir, sizes, verify_images, per_file)
    if not pairs:
        fatal.append(Problem(images_dir, 'expected at least one usable image, found none'))
    _raise_or_skip(fatal, per_file, skip_bad)
    return SplitFiles(pairs, per_file)


def _pair_labels(images_dir, labels_dir, sizes, verify_images, problems):
    """Pair each readable image (``sizes``: path -> (W, H) or None) with its label.

    Appends a Problem to ``problems`` for every label without image, image without label, unreadable
    label or size mismatch; returns the good (image, label) pairs.
    """
    index = _label_index(labels_dir)
    image_stems = {os.path.splitext(os.path.basename(p))[0] for p in list_images(images_dir)}
    for path in list_images(labels_dir):
        stem = os.path.splitext(os.path.basename(path))[0]
        if not stem.lower().endswith(LABEL_SUFFIX):
            problems.append(Problem(path, 'expected a mask named NAME_segmentation.<ext> beside image NAME'))
        elif stem[:-len(LABEL_SUFFIX)] not in image_stems:
            problems.append(Problem(path, 'label without image; expected '
                                          f'{os.path.join(images_dir, stem[:-len(LABEL_SUFFIX)])}.<ext>'))
    pairs = []
    for image_path, image_size in sizes.items():
        stem = os.path.splitext(os.path.basename(image_path))[0]
        labels = index.get(stem, [])
        if not labels:
            problems.append(Problem(image_path, 'image without label; expected '
                                                f'{os.path.join(labels_dir, stem + LABEL_SUFFIX)}.png'))
            continue
        if len(labels) > 1:
            problems.append(Problem(image_path, 'expected one label, found several: '
                                                + ', '.join(os.path.basename(p) for p in labels)))
            continue
        problem = _label_size_problem(image_path, image_size, labels[0]) if verify_images else None
        if problem:
            problems.append(problem)
        else:
            pairs.append((image_path, labels[0]))
    return pairs


def _label_size_problem(image_path, image_size, label_path):
    """A Problem when the label is unreadable or its (W, H) differs from ``image_size``, else None."""
    label_size, problem = header_size(label_path)
    if problem:
        return problem
    if label_size != image_size:
        return Problem(label_path, f'expected a mask of its image\'s size {image_size[0]}x{image_size[1]} '
                                   f'(WxH, {image_path}), got {label_size[0]}x{label_size[1]}')
    return None
