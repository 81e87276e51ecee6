"""Tests for data/synthetic.py: valid layout, byte-identical output, lesions inside the head."""
import hashlib
import os

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from data.image_io import list_images, read_image, read_mask
from data.layout import check_split, check_training_layout
from data.synthetic import MANIFEST, ensure_demo_dataset, make_phantom

SMALL = dict(size=32, n_a=4, n_b=3, n_val=3, n_testA=2, n_testB=2, n_few=2)


def _hashes(folder):
    """Relative path -> sha256 of every file under ``folder``."""
    result = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                result[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return result


def test_default_demo_is_a_valid_layout(tmp_path):
    folder = ensure_demo_dataset(tmp_path)
    assert folder == str(tmp_path / 'demo' / 'demo_1')
    training = check_training_layout(tmp_path, 'demo', 'demo_1')
    assert os.path.basename(training.dir_A) == '60_A_weak' and len(training.paths_B) == 60
    assert len(check_split(folder, 'val')) == 16 and len(check_split(folder, 'testA')) == 24
    assert len(check_split(folder, 'testB')) == 12
    image = read_image(training.paths_A[0])
    assert image.shape == (64, 64, 3) and np.array_equal(image[..., 0], image[..., 2])
    # Nothing but the dataset itself is left in the dataset folder (no temp dirs).
    assert os.listdir(tmp_path / 'demo') == ['demo_1']


def test_identical_bytes_in_two_places(tmp_path):
    first = ensure_demo_dataset(tmp_path / 'one', **SMALL)
    second = ensure_demo_dataset(tmp_path / 'two', **SMALL)
    hashes = _hashes(first)
    assert MANIFEST in hashes and len(hashes) == 4 + 3 + 2 * 3 + 2 * 2 + 2 + 2 * 2 + 1
    assert hashes == _hashes(second)


def test_few_shot_set_is_labelled_training_images(tmp_path):
    folder = ensure_demo_dataset(tmp_path, **SMALL)
    hashes = _hashes(folder)
    few = os.path.join('few_sample', 'stage2_2')
    images = list_images(os.path.join(folder, few, 'A'))
    assert [os.path.basename(p) for p in images] == ['A_weak_0000.png', 'A_weak_0001.png']
    for path in images:
        name = os.path.basename(path)
        assert hashes[os.path.join(few, 'A', name)] == hashes[os.path.join('4_A_weak', name)]
        assert read_mask(os.path.join(folder, few, 'B', name[:-4] + '_segmentation.png')).any()


def test_second_call_does_nothing_and_mismatch_raises(tmp_path):
    folder = ensure_demo_dataset(tmp_path, **SMALL)
    marker = os.path.join(folder, 'testB', 'testB_0000.png')
    stamp = os.stat(marker).st_mtime_ns
    assert ensure_demo_dataset(tmp_path, **SMALL) == folder
    assert os.stat(marker).st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match='delete it'):
        ensure_demo_dataset(tmp_path, **dict(SMALL, size=48))


def test_masks_nonempty_and_inside_the_head(tmp_path):
    folder = ensure_demo_dataset(tmp_path, **SMALL)
    for split in ('val', 'testA'):
        for image_path, label_path in check_split(folder, split):
            mask, image = read_mask(label_path), read_image(image_path)
            assert mask.any() and image[mask].min() > 0  # lesion pixels are never background
            # Lesions are bright: brighter on average than the rest of the head.
            head = (image[..., 0] > 0) & ~mask
            assert image[mask][:, 0].mean() > image[head][:, 0].mean()


@pytest.mark.parametrize('n_lesions', [0, 1, 2])
def test_phantom_lesions_inside_head(n_lesions):
    for index in range(5):
        image, head, lesion = make_phantom(np.random.default_rng([7, index]), 48, n_lesions)
        assert image.dtype == np.uint8 and image.shape == (48, 48)
        assert not (lesion & ~head).any()
        assert lesion.any() == (n_lesions > 0)
        # Black background beyond the softened head border, as on a skull-stripped scan.
        assert image[~binary_dilation(head, iterations=3)].max() == 0


def test_a_images_differ_from_b_images(tmp_path):
    folder = ensure_demo_dataset(tmp_path, **SMALL)
    a_max = [read_image(p).max() for p in list_images(os.path.join(folder, '4_A_weak'))]
    b_max = [read_image(p).max() for p in list_images(os.path.join(folder, '3_B_weak'))]
    assert min(a_max) > max(b_max)
