"""Per-image colour model of lesion against surrounding skin, added to a lesion map before the CRF.

A network trained on weak labels finds a faint lesion's dark core but not its lighter rim. The rim
has the colours of the core more than those of the skin around the lesion, so a colour histogram fitted
on this very image (GrabCut's idea, with histograms instead of Gaussian mixtures) moves those pixels
across the decision, while the dense CRF's fixed kernels only smooth locally.
"""
import numpy as np
from scipy import ndimage

# 8 levels per RGB channel (512 colours): finer histograms overfit the few hundred core pixels
# of a small lesion (val DI fell with 16 levels).
LEVELS = 8
# Skin samples lie this far (fraction of the image's longer side) outside the current lesion mask,
# so the lesion's own blurred rim is not taken as skin.
SKIN_MARGIN = 0.1
# Histogram smoothing (in levels): neighbouring colours share evidence.
SMOOTHING = 0.7
# Fewer pixels than this on either side: no model, the map is returned unchanged.
MIN_PIXELS = 20
EPS = 1e-4


def _logit(prob):
    prob = np.clip(prob, EPS, 1 - EPS)
    return np.log(prob / (1 - prob))


def _histogram(codes):
    counts = np.bincount(codes, minlength=LEVELS ** 3).astype(np.float64).reshape((LEVELS,) * 3)
    smooth = ndimage.gaussian_filter(counts, SMOOTHING).ravel()
    # One pseudo-count spread over all colours keeps unseen colours at a finite, neutral likelihood.
    return (smooth + 1.0 / LEVELS ** 3) / (smooth.sum() + 1.0)


def lesion_colour_prob(raw, lesion, foreground):
    """P(lesion | colour) per pixel from this image's own lesion and skin colours, or None.

    raw: uint8 H x W x 3; lesion: bool H x W (the current mask); foreground: bool H x W (pixels that
    can be skin: not the black frame). None when either side has fewer than MIN_PIXELS pixels.
    """
    codes = (raw.astype(np.int64) * LEVELS // 256)
    codes = (codes[..., 0] * LEVELS + codes[..., 1]) * LEVELS + codes[..., 2]
    skin = foreground & (ndimage.distance_transform_edt(~lesion) > SKIN_MARGIN * max(lesion.shape))
    if lesion.sum() < MIN_PIXELS or skin.sum() < MIN_PIXELS:
        return None
    inside, outside = _histogram(codes[lesion]), _histogram(codes[skin])
    return (inside / (inside + outside))[codes].astype(np.float32)


def add_colour_evidence(raw, prob, weight, foreground):
    """The map with ``weight`` times the colour model's log-odds added to its own (0: unchanged).

    prob is calibrated (p >= 0.5 is the decision), so its 0.5 level gives the lesion the model is
    fitted on.
    """
    if weight == 0:
        return prob
    colour = lesion_colour_prob(raw, prob >= 0.5, foreground)
    if colour is None:
        return prob
    logit = _logit(prob) + weight * _logit(colour)
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
