"""Tests for reporting/overlay.py: prediction / ground-truth contours drawn on the image."""
import numpy as np

from reporting.overlay import GT_COLOUR, PRED_COLOUR, contour, draw_overlay


def _square(size, top, left, side):
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def _raw(size, seed=0):
    """A random uint8 RGB image that contains neither overlay colour."""
    return np.random.default_rng(seed).integers(20, 200, (size, size, 3), dtype=np.uint8)


def test_contour_is_the_inner_outline():
    mask = _square(10, 2, 3, 5)
    outline = contour(mask)
    expected = mask.copy()
    expected[3:6, 4:7] = False  # the 3 x 3 interior
    assert np.array_equal(outline, expected)
    assert not contour(np.zeros((6, 6), bool)).any()
    # A mask touching the image border is outlined along the border too.
    assert contour(np.ones((4, 4), bool)).sum() == 12


def test_contours_in_their_colours_and_the_rest_of_the_image_unchanged():
    raw = _raw(40)
    pred, gt = _square(40, 5, 5, 12), _square(40, 20, 18, 10)
    out = draw_overlay(raw, pred, gt)
    assert out.dtype == np.uint8 and out.shape == raw.shape
    assert np.all(out[contour(pred)] == PRED_COLOUR)
    assert np.all(out[contour(gt)] == GT_COLOUR)
    untouched = ~(contour(pred) | contour(gt))
    assert np.array_equal(out[untouched], raw[untouched])  # interiors and background included
    assert np.array_equal(raw, _raw(40))  # the input is not modified


def test_prediction_is_drawn_over_ground_truth_where_outlines_meet():
    raw = _raw(24)
    mask = _square(24, 4, 4, 10)
    out = draw_overlay(raw, mask, mask)
    assert np.all(out[contour(mask)] == PRED_COLOUR)
    assert not np.all(out == GT_COLOUR, axis=2).any()


def test_without_ground_truth_only_the_prediction_is_drawn():
    raw = _raw(16)
    pred = _square(16, 2, 2, 6)
    out = draw_overlay(raw, pred, None)
    assert np.all(out[contour(pred)] == PRED_COLOUR)
    assert np.array_equal(out[~contour(pred)], raw[~contour(pred)])
    # Empty masks leave the image as it was.
    assert np.array_equal(draw_overlay(raw, np.zeros((16, 16), bool), np.zeros((16, 16), bool)), raw)


def test_outline_grows_with_image_size():
    raw = _raw(512)
    pred = _square(512, 100, 100, 200)
    out = draw_overlay(raw, pred)
    assert np.array_equal(np.all(out == PRED_COLOUR, axis=2), contour(pred, width=2))  # 2 px at 512 px
