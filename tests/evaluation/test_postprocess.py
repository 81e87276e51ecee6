"""Tests for evaluation/postprocess.py: image foreground, mask clean-up and threshold calibration."""
import numpy as np
import pytest

from data.image_io import resize_mask
from evaluation.postprocess import (BACKGROUND_LEVEL, POSTPROCESSING, calibrate, central_component, fill_holes,
                                    foreground_mask, largest_component, postprocess)


def _ring(size=20, outer=(3, 17), inner=(7, 13)):
    """Bool square ring: a filled square with a square hole."""
    mask = np.zeros((size, size), bool)
    mask[outer[0]:outer[1], outer[0]:outer[1]] = True
    mask[inner[0]:inner[1], inner[0]:inner[1]] = False
    return mask


def test_foreground_is_the_non_black_part_with_its_holes_filled():
    # A "head" (bright ring) on black, with a dark "ventricle" inside it and a black frame around it.
    head = _ring()
    raw = np.zeros((20, 20, 3), np.uint8)
    raw[head] = 120
    raw[5, 5] = (0, 0, 40)  # one channel above the background level is enough
    fg = foreground_mask(raw)
    assert fg.dtype == bool and fg.shape == (20, 20)
    expected = head.copy()
    expected[7:13, 7:13] = True  # the hole (dark but enclosed) is foreground
    assert np.array_equal(fg, expected)
    assert not fg[0].any() and not fg[:, 0].any()  # the black frame stays background


def test_background_level_and_gray_images():
    raw = np.full((6, 6, 3), BACKGROUND_LEVEL, np.uint8)
    raw[2:4, 2:4] = BACKGROUND_LEVEL + 1
    expected = np.zeros((6, 6), bool)
    expected[2:4, 2:4] = True
    assert np.array_equal(foreground_mask(raw), expected)
    assert np.array_equal(foreground_mask(raw[..., 0]), expected)  # H x W input works too


def test_all_bright_image_is_all_foreground_and_all_black_is_none():
    assert foreground_mask(np.full((9, 7, 3), 200, np.uint8)).all()
    assert not foreground_mask(np.zeros((9, 7, 3), np.uint8)).any()


def test_largest_component_keeps_the_biggest_8_connected_blob():
    mask = np.zeros((12, 12), bool)
    mask[1:3, 1:3] = True  # 4 px
    mask[6:10, 6:10] = True  # 16 px
    mask[10, 10] = True  # diagonal neighbour: joins the 16 px blob under 8-connectivity
    out = largest_component(mask)
    expected = np.zeros_like(mask)
    expected[6:10, 6:10] = True
    expected[10, 10] = True
    assert np.array_equal(out, expected)
    assert not largest_component(np.zeros((5, 5), bool)).any()
    single = np.eye(5, dtype=bool)  # one diagonal component stays whole
    assert np.array_equal(largest_component(single), single)


def test_largest_component_of_a_volume_is_26_connected():
    volume = np.zeros((8, 8, 8), bool)
    chain = np.eye(5, dtype=bool)[:, :, None] & np.eye(5, dtype=bool)[:, None, :]  # 5 voxels touching at corners
    volume[:5, :5, :5] = chain
    volume[6:8, 6:8, 7] = True  # 4 voxels sharing faces
    np.testing.assert_array_equal(largest_component(volume)[:5, :5, :5], chain)
    assert largest_component(volume).sum() == 5


def test_central_component_keeps_the_blob_nearest_the_centre_not_the_biggest():
    mask = np.zeros((21, 21), bool)
    mask[0:8, 0:8] = True  # 64 px in a corner: a sticker
    mask[9:12, 11:14] = True  # 9 px beside the centre (10, 10): the lesion core
    mask[12, 14] = True  # diagonal neighbour: part of the core under 8-connectivity
    expected = np.zeros_like(mask)
    expected[9:12, 11:14] = True
    expected[12, 14] = True
    assert np.array_equal(central_component(mask), expected)
    assert largest_component(mask)[0, 0] and not largest_component(mask)[10, 12]
    assert not central_component(np.zeros((5, 5), bool)).any()
    single = np.eye(5, dtype=bool)
    assert np.array_equal(central_component(single), single)


def test_fill_holes_fills_enclosed_holes_only():
    ring = _ring()
    filled = fill_holes(ring)
    expected = np.zeros_like(ring)
    expected[3:17, 3:17] = True
    assert np.array_equal(filled, expected)
    # An open "C" (hole touching the outside) is unchanged.
    open_ring = ring.copy()
    open_ring[9:11, 13:17] = False
    assert np.array_equal(fill_holes(open_ring), open_ring)


@pytest.mark.parametrize('name', sorted(POSTPROCESSING))
def test_postprocess_names(name):
    mask = _ring()
    mask[0, 0] = True  # a speck
    out = postprocess(mask, name)
    assert out.dtype == bool and out.shape == mask.shape
    assert out[0, 0] == (name in ('none', 'fill'))
    assert out[10, 10] == (name in ('fill', 'largest+fill', 'central+fill'))


def test_resize_mask_enlarges_with_smooth_edges_and_shrinks():
    rows, cols = np.mgrid[:16, :24]
    disk = (rows - 7.5) ** 2 + (cols - 11.5) ** 2 <= 36
    big = resize_mask(disk, (128, 192))
    rows, cols = np.mgrid[:128, :192]
    drawn = (rows - 63.5) ** 2 + (cols - 95.5) ** 2 <= 48 ** 2  # the same disk drawn at 8 x
    assert big.dtype == bool and big.shape == (128, 192)
    blocks = np.kron(disk, np.ones((8, 8), bool))  # nearest neighbour
    assert (big != drawn).mean() < 0.7 * (blocks != drawn).mean()
    np.testing.assert_array_equal(resize_mask(big, (16, 24)), disk)
    assert not resize_mask(np.zeros((5, 5), bool), (50, 40)).any()


@pytest.mark.parametrize('threshold', [0.05, 0.3, 0.5, 0.8, 0.99])
def test_calibrate_is_monotone_and_maps_threshold_to_one_half(threshold):
    prob = np.linspace(0, 1, 1001, dtype=np.float32)
    out = calibrate(prob, threshold)
    assert out.dtype == np.float32 and out.shape == prob.shape
    assert out[0] == 0.0 and out[-1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(out) >= 0)
    assert calibrate(np.float32(threshold), threshold) == pytest.approx(0.5, abs=1e-6)
    # The decision is kept: calibrated >= 0.5 exactly where prob >= threshold (away from float rounding).
    away = np.abs(prob - threshold) > 1e-5
    assert np.array_equal((out >= 0.5)[away], (prob >= threshold)[away])


def test_calibrate_handles_extreme_thresholds():
    prob = np.array([0.0, 0.5, 1.0], np.float32)
    for threshold in (0.0, 1.0):
        out = calibrate(prob, threshold)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert out[0] == 0.0 and out[-1] == pytest.approx(1.0, abs=1e-5)
