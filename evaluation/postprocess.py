"""Image-level helpers shared by test.py and crf.py: image foreground, mask clean-up, calibration.

All work on numpy arrays of one image at a time, with scipy's vectorised morphology (no per-pixel
Python loops).
"""
import numpy as np
from scipy import ndimage

# Pixels at or below this grey level in every channel are image background (air around the head
# in MRI, the black frame of a dermoscope): no lesion can be there.
BACKGROUND_LEVEL = 5


def foreground_mask(raw: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 image -> bool H x W: not-black pixels with the holes filled.

    Filling holes keeps dark structures inside the head (ventricles) as foreground; the same rule
    is applied to every image of every dataset.
    """
    bright = raw.max(axis=2) > BACKGROUND_LEVEL if raw.ndim == 3 else raw > BACKGROUND_LEVEL
    return ndimage.binary_fill_holes(bright)


def _keep_one_component(mask, choose):
    """Keep only the 8-connected (3-D: 26-connected) component of a bool mask whose label
    ``choose(labels, count)`` returns (empty stays empty, one component stays whole)."""
    labels, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if count <= 1:
        return mask
    return labels == choose(labels, count)


def _largest_label(labels, count):
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return int(sizes.argmax())


def _most_central_label(labels, count):
    rows, cols = np.nonzero(labels)
    distance = (rows - (labels.shape[0] - 1) / 2) ** 2 + (cols - (labels.shape[1] - 1) / 2) ** 2
    nearest = np.full(count + 1, np.inf)
    np.minimum.at(nearest, labels[rows, cols], distance)
    return int(nearest.argmin())


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest 8-connected component of a bool mask (empty stays empty); of a 3-D mask
    (a volume), the largest 26-connected one."""
    return _keep_one_component(mask, _largest_label)


def central_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the 8-connected component that comes nearest to the image centre (empty stays empty).

    Dermoscopy (and most lesion photography) centres the lesion, while the things a weakly supervised
    model confuses with it (ink marks, stickers, rulers, hair) lie around it, often larger than a faint
    lesion's detected core.
    """
    return _keep_one_component(mask, _most_central_label)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_fill_holes(mask)


POSTPROCESSING = {
    'none': lambda mask: mask,
    'largest': largest_component,
    'fill': fill_holes,
    'largest+fill': lambda mask: fill_holes(largest_component(mask)),
    'central': central_component,
    'central+fill': lambda mask: fill_holes(central_component(mask)),
}


def postprocess(mask: np.ndarray, name: str) -> np.ndarray:
    """Apply the post-processing called ``name`` (one of POSTPROCESSING) to a bool mask."""
    return POSTPROCESSING[name](mask)




def calibrate(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Piecewise-linear, monotone map of [0, 1] onto [0, 1] sending ``threshold`` to 0.5.

    Probability maps are saved calibrated, so ``p >= 0.5`` is exactly the val-chosen decision and
    a CRF's unary term sees 0.5 as "undecided" whatever map mode or threshold val picked.
    """
    threshold = float(np.clip(threshold, 1e-6, 1 - 1e-6))
    prob = np.asarray(prob, dtype=np.float32)
    low = prob / (2 * threshold)
    high = 0.5 + (prob - threshold) / (2 * (1 - threshold))
    return np.clip(np.where(prob < threshold, low, high), 0.0, 1.0)
