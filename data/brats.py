"""BraTS volumes as the networks saw them in training: the one definition that tools/prepare_brats.py
(which writes the training slices) and predict.py (which applies weights to a user's volume) share, so
the two cannot drift apart.

Per volume, the brain (non-zero voxels) is scaled to 0-255 (``normalise``); slice z is
``volume[:, :, z].T`` (for BraTS's L, P, S voxel order: anterior at the top, the patient's right on the
image's left), zero-padded centred to a square (``fit_to_size``) and copied into 3 channels.
"""
import re
import zlib

import numpy as np
from nibabel.filebasedimages import ImageFileError
from PIL import Image

from data.image_io import resize_mask

MODALITIES = ('flair', 't1', 't1ce', 't2')
BRATS_FILE = re.compile(r'^(?P<id>.+)_(?P<kind>flair|t1|t1ce|t2|seg)\.nii(\.gz)?$')
# The voxel axes of every BraTS 2018-2021 volume: x to the patient's Left, y to Posterior, z to Superior.
ORIENTATION = ('L', 'P', 'S')
SLICE_SIDE = 256  # the side of the released weights' training slices (240 px padded)
# Training slices have brain on more than this fraction of the slice (the released weights never saw others).
MIN_BRAIN_FRAC = 0.15
NIFTI_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


def normalise(volume):
    """Per-volume scaling to uint8: brain (non-zero voxels) to 0-255, background 0."""
    # Official BraTS volumes are skull-stripped with background exactly 0.
    brain = volume != 0
    scaled = np.zeros(volume.shape, np.uint8)
    if not brain.any():
        return scaled
    values = volume[brain]
    # Raw volumes start at 0; z-scored ones have negative brain values and need a low percentile.
    lo = 0.0 if values.min() >= 0 else float(np.percentile(values, 0.5))
    # The high percentile keeps isolated outliers (some BraTS 2018 FLAIRs hold 32767) from darkening all.
    hi = max(float(np.percentile(values, 99.5)), lo + 1e-6)
    scaled[brain] = np.rint(np.clip((values - lo) / (hi - lo), 0, 1) * 255)
    return scaled


def enough_brain(volume, min_brain_frac=MIN_BRAIN_FRAC):
    """Bool per axial slice z: its brain (non-zero voxels) covers more than ``min_brain_frac`` of the slice."""
    return (volume != 0).sum(axis=(0, 1)) > min_brain_frac * volume.shape[0] * volume.shape[1]


def fit_to_size(plane, size, nearest):
    """Zero-pad a slice centred to ``size`` x ``size`` (exact, no interpolation); a slice larger than
    ``size`` is padded square and then resized (nearest for masks, bilinear for images)."""
    h, w = plane.shape
    side = max(h, w, size)
    padded = np.zeros((side, side), plane.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    padded[top:top + h, left:left + w] = plane
    if side == size:
        return padded
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(padded).resize((size, size), resample))


def slice_image(scaled, z, size=SLICE_SIDE):
    """Axial slice ``z`` of a ``normalise``d volume as the uint8 size x size x 3 training image."""
    gray = fit_to_size(scaled[:, :, z].T, size, nearest=False)
    return np.repeat(gray[:, :, None], 3, axis=2)


def slice_mask(tumour, z, size=SLICE_SIDE):
    """Axial slice ``z`` of a bool tumour volume as the size x size training mask."""
    return fit_to_size(tumour[:, :, z].T, size, nearest=True)


def slice_to_volume(plane, in_plane_shape):
    """The inverse of ``slice_image``'s geometry: a size x size bool mask or float map of one slice ->
    the volume's own (X, Y) plane (enlarged back when the slice was shrunk, then the padding cut off)."""
    x, y = in_plane_shape
    side = max(x, y, plane.shape[0])
    if side != plane.shape[0]:
        if plane.dtype == bool:
            plane = resize_mask(plane, (side, side))
        else:
            plane = np.asarray(Image.fromarray(plane.astype(np.float32)).resize((side, side), Image.BILINEAR))
    top, left = (side - y) // 2, (side - x) // 2
    return plane[top:top + y, left:left + x].T
