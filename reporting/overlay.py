"""Overlays for the report: prediction and ground-truth contours drawn on the image."""
import numpy as np
from scipy import ndimage

PRED_COLOUR = (0, 255, 0)
GT_COLOUR = (255, 0, 0)


def contour(mask, width=1):
    """Bool mask -> bool outline ``width`` pixels thick (inside the mask)."""
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)


def draw_overlay(raw, pred, gt=None):
    """uint8 H x W x 3 image with the prediction outline in green and the ground truth in red."""
    out = np.array(raw, dtype=np.uint8, copy=True)
    width = max(1, round(max(out.shape[:2]) / 256))
    if gt is not None:
        out[contour(gt, width)] = GT_COLOUR
    out[contour(pred, width)] = PRED_COLOUR
    return out
