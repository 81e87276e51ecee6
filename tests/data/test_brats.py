"""Tests for data/brats.py: the volume normalisation and slice geometry shared by prepare_brats.py and predict.py."""
import numpy as np
import pytest

from data.brats import SLICE_SIDE, normalise, slice_image, slice_mask, slice_to_volume


def test_normalise_raw_and_zscored():
    raw = np.zeros((10, 10, 2), np.float32)
    raw[2:8, 2:8] = np.linspace(1, 1000, 72).reshape(6, 6, 2)
    for volume in (raw, np.where(raw != 0, (raw - 500) / 300, 0).astype(np.float32)):
        scaled = normalise(volume)
        assert scaled.dtype == np.uint8 and (scaled[volume == 0] == 0).all()
        assert scaled[volume != 0].max() == 255 and scaled[volume != 0].min() <= 1


def test_slices_are_transposed_and_padded_centred():
    scaled = np.zeros((240, 200, 3), np.uint8)  # x, y, z
    scaled[10, 30, 1] = 200  # column x = 10, row y = 30 of slice 1
    image = slice_image(scaled, 1)
    assert image.shape == (SLICE_SIDE, SLICE_SIDE, 3) and image.dtype == np.uint8
    assert (image[30 + 28, 10 + 8] == 200).all() and image.sum() == 3 * 200  # padded by (256-200)/2, (256-240)/2
    assert slice_mask(scaled > 0, 1).sum() == 1 and slice_mask(scaled > 0, 1)[58, 18]


@pytest.mark.parametrize('shape', [(240, 240), (250, 198), (300, 280)])
def test_slice_to_volume_inverts_the_geometry(shape):
    rng = np.random.default_rng(0)
    tumour = np.zeros(shape + (1,), bool)
    tumour[shape[0] // 4:shape[0] // 2, shape[1] // 3:shape[1] // 2 + 20, 0] = True
    mask = slice_mask(tumour, 0)
    back = slice_to_volume(mask, shape)
    assert back.shape == shape and back.dtype == bool
    if max(shape) <= SLICE_SIDE:  # padding only: exact
        np.testing.assert_array_equal(back, tumour[..., 0])
    else:  # shrunk and enlarged back: the edges move by about a pixel
        assert (back != tumour[..., 0]).mean() < 0.01
    prob = rng.random((SLICE_SIDE, SLICE_SIDE)).astype(np.float32)
    assert slice_to_volume(prob, shape).shape == shape and slice_to_volume(prob, shape).dtype == np.float32
