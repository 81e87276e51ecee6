"""Tests for refinement/colour_model.py on a tiny synthetic lesion (48 px): a dark core, a lighter rim, skin."""
import numpy as np

from refinement.colour_model import add_colour_evidence, lesion_colour_prob
from evaluation.postprocess import calibrate, foreground_mask

SIZE = 48


def _lesion(seed=0):
    """(uint8 image, bool core, bool whole lesion): skin ~(200, 160, 140), rim ~(115, 75, 60) (nearer the
    core's colours than the skin's), core ~(90, 50, 40); centred, lesion radius 10, core radius 6 (the
    rim lies within the colour model's skin margin of the core), a 2-px black frame."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    radius = np.hypot(rows - SIZE / 2, cols - SIZE / 2)
    core, lesion = radius < 6, radius < 10
    raw = np.select([core[..., None], lesion[..., None]], [np.array([90, 50, 40]), np.array([115, 75, 60])],
                    np.array([200, 160, 140]))
    raw = (raw + rng.normal(0, 4, raw.shape)).clip(0, 255)
    raw[:2] = raw[-2:] = raw[:, :2] = raw[:, -2:] = 0
    return raw.astype(np.uint8), core, lesion


def _map_of(mask):
    """A calibrated map whose decision (p >= 0.5) is ``mask``: 0.7 inside, 0.3 outside."""
    return calibrate(np.where(mask, 0.7, 0.3), 0.5)


def test_colour_model_grows_a_core_only_mask_onto_the_rim():
    raw, core, lesion = _lesion()
    prob = _map_of(core)
    grown = add_colour_evidence(raw, prob, 2.0, foreground_mask(raw)) >= 0.5
    rim = lesion & ~core
    assert not (prob >= 0.5)[rim].any() and grown[rim].mean() > 0.9
    assert grown[core].all() and not grown[~lesion & foreground_mask(raw)].any()


def test_lesion_colour_probability_is_high_on_lesion_colours_and_low_on_skin():
    raw, core, lesion = _lesion(1)
    colour = lesion_colour_prob(raw, core, foreground_mask(raw))
    assert colour.dtype == np.float32 and colour.shape == core.shape
    assert colour[core].mean() > 0.9 and colour[~lesion & foreground_mask(raw)].mean() < 0.1


def test_weight_zero_and_too_few_pixels_leave_the_map_unchanged():
    raw, core, _ = _lesion(2)
    prob = _map_of(core)
    foreground = foreground_mask(raw)
    assert add_colour_evidence(raw, prob, 0, foreground) is prob
    tiny = np.zeros_like(core)
    tiny[SIZE // 2, SIZE // 2] = True
    assert lesion_colour_prob(raw, tiny, foreground) is None
    np.testing.assert_array_equal(add_colour_evidence(raw, _map_of(tiny), 2.0, foreground), _map_of(tiny))
