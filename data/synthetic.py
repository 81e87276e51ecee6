"""The embedded demo dataset: brain-MRI-like phantoms, made on first use, identical on every run.

``A`` images hold one or two bright irregular lesions inside the head, ``B`` images none; the layout
is the real datasets' one (docs/DESIGN.md), so every script runs on it with ``--dataset demo`` and no
download. Each image is drawn from its own seed (dataset seed, split, index), so changing one count
does not change the other images.
"""
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
from scipy.ndimage import binary_erosion, gaussian_filter

from data.layout import LABEL_SUFFIX

MANIFEST = 'demo_manifest.json'
_SPLIT_CODES = {'A_weak': 1, 'B_weak': 2, 'val': 3, 'testA': 4, 'testB': 5}


def _smooth_noise(rng, size, sigma):
    """Gaussian-smoothed white noise, rescaled to zero mean and unit standard deviation."""
    field = gaussian_filter(rng.standard_normal((size, size)), sigma, mode='wrap')
    return (field - field.mean()) / (field.std() + 1e-8)


def _lesion(rng, yy, xx, inside):
    """One lesion mask: a rotated ellipse whose edge is perturbed by smooth noise, wholly inside ``inside``."""
    size = yy.shape[0]
    for _ in range(100):
        cy, cx = rng.uniform(-0.55, 0.55, size=2)
        radius = rng.uniform(0.09, 0.24)
        aspect = rng.uniform(0.6, 1.0)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / radius
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (radius * aspect)
        wobble = rng.uniform(0.25, 0.6) * _smooth_noise(rng, size, radius * size / 5)
        mask = np.hypot(u, v) + wobble < 1.0
        # Redraw lesions that would be cut by the head border or are too small to see.
        if mask.sum() >= max(6, size * size // 400) and not (mask & ~inside).any():
            return mask
    raise RuntimeError('could not place a lesion inside the head')  # not reached for size >= 32


def make_phantom(rng, size, n_lesions):
    """Draw one phantom slice.

    Args: ``rng`` a numpy Generator, ``size`` the image side, ``n_lesions`` 0, 1 or 2.
    Returns (image uint8 HxW, head bool HxW, lesion bool HxW).
    """
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(coords, coords, indexing='ij')
    cy, cx = rng.uniform(-0.05, 0.05, size=2)
    semi_x, semi_y = rng.uniform(0.6, 0.72), rng.uniform(0.75, 0.88)
    tilt = rng.uniform(-0.2, 0.2)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(tilt) + dy * np.sin(tilt)) / semi_x
    v = (-dx * np.sin(tilt) + dy * np.cos(tilt)) / semi_y
    theta = np.arctan2(v, u)
    edge = 1.0 + 0.03 * np.sin(3 * theta + rng.uniform(0, 2 * np.pi)) \
        + 0.02 * np.sin(5 * theta + rng.uniform(0, 2 * np.pi))
    rho = np.hypot(u, v) / edge
    head = rho < 1.0

    # Grey tissue: a smooth texture plus fine noise, slightly darker towards the rim.
    tissue = rng.uniform(0.42, 0.52) + 0.06 * _smooth_noise(rng, size, size / 20) \
        + 0.025 * rng.standard_normal((size, size)) - 0.08 * rho ** 2
    # Two dark ventricles near the centre, as on an axial FLAIR slice.
    for side in (-1.0, 1.0):
        vu = (u - side * rng.uniform(0.12, 0.18)) / rng.uniform(0.07, 0.11)
        vv = (v + rng.uniform(-0.05, 0.05)) / rng.uniform(0.22, 0.3)
        tissue = np.where(np.hypot(vu, vv) < 1.0, tissue - 0.25, tissue)

    lesion = np.zeros((size, size), dtype=bool)
    inner = binary_erosion(head, iterations=max(1, size // 32))
    for _ in range(n_lesions):
        spot = _lesion(rng, yy, xx, inner & ~lesion)
        contrast = rng.uniform(0.2, 0.45)
        texture = 1.0 + 0.15 * _smooth_noise(rng, size, size / 24)
        # A softened edge, so the lesion boundary is not a trivial step.
        tissue = tissue + contrast * texture * gaussian_filter(spot.astype(float), 0.6)
        lesion |= spot

    # Blur the head border a little; the background stays at 0 like a skull-stripped scan.
    soft_head = gaussian_filter(head.astype(float), 0.7)
    image = np.clip(tissue, 0.0, 1.0) * soft_head
    return np.rint(image * 255).astype(np.uint8), head, lesion


def _save_png(path, array):
    """Plain PNG write (the whole folder is renamed into place at the end)."""
    Image.fromarray(array).save(path, format='PNG')


def _generate(root, counts, size, seed):
    """Write every split into ``root``; returns the sorted relative paths of the files written.

    The first ``counts['few']`` lesion training images also go, with their masks, to
    few_sample/stage2_<few>/A and B: the labelled few-shot set of stage 2, drawn from the training
    images as in the real datasets.
    """
    dirs = {'A_weak': f'{counts["A_weak"]}_A_weak', 'B_weak': f'{counts["B_weak"]}_B_weak',
            'val': 'val', 'testA': 'testA', 'testB': 'testB'}
    few_dir = os.path.join('few_sample', f'stage2_{counts["few"]}')
    for sub in ('A', 'B'):
        os.makedirs(os.path.join(root, few_dir, sub), exist_ok=True)
    written = []
    for split, number in counts.items():
        if split == 'few':
            continue
        labeled = split in ('val', 'testA')
        image_dir = os.path.join(dirs[split], 'images') if labeled else dirs[split]
        os.makedirs(os.path.join(root, image_dir), exist_ok=True)
        if labeled:
            os.makedirs(os.path.join(root, dirs[split], 'labels'), exist_ok=True)
        with_lesion = split in ('A_weak', 'val', 'testA')
        for index in range(number):
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
            n_lesions = int(rng.integers(1, 3)) if with_lesion else 0
            gray, _, lesion = make_phantom(rng, size, n_lesions)
            name = f'{split}_{index:04d}'
            files = {os.path.join(image_dir, name + '.png'): np.repeat(gray[:, :, None], 3, axis=2)}
            if labeled:
                label = os.path.join(dirs[split], 'labels', name + LABEL_SUFFIX + '.png')
                files[label] = lesion.astype(np.uint8) * 255
            if split == 'A_weak' and index < counts['few']:
                files[os.path.join(few_dir, 'A', name + '.png')] = files[os.path.join(image_dir, name + '.png')]
                files[os.path.join(few_dir, 'B', name + LABEL_SUFFIX + '.png')] = lesion.astype(np.uint8) * 255
            for relative, array in files.items():
                _save_png(os.path.join(root, relative), array)
                written.append(relative.replace(os.sep, '/'))
    return sorted(written)


def _is_complete(folder_dir, settings):
    """True when ``folder_dir`` holds a manifest with these settings and every file it lists."""
    try:
        with open(os.path.join(folder_dir, MANIFEST), encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    return manifest.get('settings') == settings and all(
        os.path.isfile(os.path.join(folder_dir, rel)) for rel in manifest.get('files', []))


def ensure_demo_dataset(dataroot, dataset='demo', folder='demo_1', size=64, n_a=60, n_b=60,
                        n_val=16, n_testA=24, n_testB=12, n_few=8, seed=0):
    """Create ``<dataroot>/<dataset>/<folder>`` with the demo data unless it is already complete.

    The data are generated in a hidden temp folder beside the target and renamed into place, so a
    crash leaves nothing half-made and concurrent callers (e.g. DDP ranks) are safe. Returns the
    folder path. Raises ``FileExistsError`` when the folder exists but is not this demo data.
    """
    counts = {'A_weak': n_a, 'B_weak': n_b, 'val': n_val, 'testA': n_testA, 'testB': n_testB, 'few': n_few}
    settings = {'size': size, 'seed': seed, 'counts': counts}
    dataset_dir = os.path.join(str(dataroot), dataset)
    folder_dir = os.path.join(dataset_dir, folder)
    if _is_complete(folder_dir, settings):
        return folder_dir
    if os.path.exists(folder_dir):
        raise FileExistsError(f'{folder_dir} exists but is not a complete demo dataset with these settings '
                              f'({settings}); delete it or choose another --folder')
    os.makedirs(dataset_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f'.{folder}.', suffix='.tmp', dir=dataset_dir)
    try:
        files = _generate(tmp_dir, counts, size, seed)
        with open(os.path.join(tmp_dir, MANIFEST), 'w', encoding='utf-8') as f:
            json.dump({'settings': settings, 'files': files}, f, indent=2)
            f.write('\n')
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it private; the data are meant to be shared
        try:
            os.rename(tmp_dir, folder_dir)
        except OSError:
            # Another process finished first; keep its copy when it is complete.
            if not _is_complete(folder_dir, settings):
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return folder_dir


def make_demo_if_missing(dataroot, dataset, folder):
    """Build the demo data when ``--dataset demo`` names a folder that does not exist yet.

    An existing folder is left as it is (and checked like any dataset by the caller), so a user's
    own edits or a copy holding only some splits are never refused or overwritten.
    """
    if dataset == 'demo' and not os.path.isdir(os.path.join(dataroot, dataset, folder)):
        ensure_demo_dataset(dataroot, dataset=dataset, folder=folder)
