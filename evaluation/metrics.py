"""Segmentation and detection metrics (see docs/DESIGN.md, "Metrics").

Per image, from the confusion counts:
    JA = TP/(TP+FP+FN)   DI = 2TP/(2TP+FP+FN)   AC = (TP+TN)/all
    SE = TP/(TP+FN)      SP = TN/(TN+FP)
Any zero denominator scores 1, so an empty prediction on an empty mask scores JA = DI = 1 (ISIC).
A probability map becomes a mask by ``probs >= threshold`` (see ``binarize``).

Boundary and lesion-wise figures (``surface_scores``, ``lesion_counts``; MONAI's definitions, checked against
``monai.metrics`` in tests/evaluation/test_metrics.py), in pixels (voxels, or ``spacing`` units) of the scored mask:
    HD95  95th-percentile symmetric Hausdorff distance between the two masks' boundaries (pixels with a
          face-neighbour outside the mask): the larger of the two directed 95th percentiles
    NSD   normalised surface Dice at ``SURFACE_TOLERANCE`` px: the share of both boundaries' pixels lying
          within the tolerance of the other boundary
    lesions / detected / missed / false_lesions: connected components (8-connected in 2-D, 26 in 3-D) of the
          label, those touching a predicted pixel, those not, and predicted components touching no lesion.
Empty masks: both empty scores HD95 0 and NSD 1 (as JA = DI = 1 above); one empty scores NSD 0 and HD95 NaN
(no boundary to measure to; MONAI gives inf or NaN), left out of the HD95 mean and counted in HD95_undefined.
"""
import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from util.atomic import atomic_write

SCORE_NAMES = ('JA', 'DI', 'AC', 'SE', 'SP')
COUNT_NAMES = ('TP', 'FP', 'FN', 'TN')
CSV_COLUMNS = ('name',) + COUNT_NAMES + SCORE_NAMES
SURFACE_NAMES = ('HD95', 'NSD')
LESION_NAMES = ('lesions', 'detected', 'missed', 'false_lesions')
# metrics.csv's columns with the boundary and lesion-wise figures (SegmentationScores(surface=True)).
SURFACE_COLUMNS = CSV_COLUMNS + SURFACE_NAMES + LESION_NAMES
# NSD's tolerance, in pixels: a boundary pixel within it of the other boundary counts as agreeing.
SURFACE_TOLERANCE = 2.0

# What the functions below take as a map or mask: a numpy array or a torch tensor.
Array = np.ndarray | torch.Tensor
# One image's row of metrics.csv: its name, counts and scores.
Row = dict[str, Any]


def binarize(probs: Array, threshold: float) -> Array:
    """Probability map (numpy array or torch tensor) -> boolean mask of the same type: probs >= threshold."""
    return probs >= threshold


def _as_bool_array(mask):
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool, copy=False)


def confusion_counts(pred: Array, gt: Array) -> tuple[int, int, int, int]:
    """Confusion counts of one predicted mask against its ground truth.

    pred, gt: boolean numpy arrays or torch tensors of the same shape (usually H x W); non-zero = lesion.
    Returns (tp, fp, fn, tn) as Python ints. Raises ValueError if the shapes differ.
    """
    pred, gt = _as_bool_array(pred), _as_bool_array(gt)
    if pred.shape != gt.shape:
        raise ValueError(f'prediction shape {pred.shape} differs from ground-truth shape {gt.shape}')
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    return tp, fp, fn, pred.size - tp - fp - fn


def _ratio(numerator, denominator):
    """numerator / denominator elementwise, 1 where the denominator is 0."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, dtype=np.float64),
                                                 np.asarray(denominator, dtype=np.float64))
    out = np.ones(numerator.shape)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def scores_from_counts(tp: float | np.ndarray, fp: float | np.ndarray, fn: float | np.ndarray,
                       tn: float | np.ndarray) -> dict[str, float] | dict[str, np.ndarray]:
    """Scores from confusion counts.

    tp, fp, fn, tn: scalars, or numpy arrays of one shape (e.g. images x thresholds) for vectorised use.
    Returns {'JA','DI','AC','SE','SP'}: Python floats for scalar counts, float64 arrays otherwise.
    """
    tp, fp, fn, tn = (np.asarray(c, dtype=np.float64) for c in (tp, fp, fn, tn))
    scores = {
        'JA': _ratio(tp, tp + fp + fn),
        'DI': _ratio(2 * tp, 2 * tp + fp + fn),
        'AC': _ratio(tp + tn, tp + fp + fn + tn),
        'SE': _ratio(tp, tp + fn),
        'SP': _ratio(tn, tn + fp),
    }
    if all(s.ndim == 0 for s in scores.values()):
        return {k: float(v) for k, v in scores.items()}
    return scores


def _boundary(mask):
    """The pixels of ``mask`` with a face-neighbour outside it (or on the array's edge), as MONAI's
    get_mask_edges finds them (scipy's binary erosion)."""
    return mask & ~ndimage.binary_erosion(mask)


def _around_both(pred, gt):
    """``pred`` and ``gt`` cut to the box around their union, one pixel wider where the array allows: the
    boundaries and their distances are those of the whole arrays, at the cost of the lesions' size."""
    union = pred | gt
    box = []
    for axis in range(union.ndim):
        used = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(used[0] - 1, 0), used[-1] + 2))
    return pred[tuple(box)], gt[tuple(box)]


def surface_scores(pred: Array, gt: Array, spacing: Sequence[float] | None = None,
                   tolerance: float = SURFACE_TOLERANCE) -> dict[str, float]:
    """{'HD95', 'NSD'} of one predicted mask against its label (bool arrays of one shape, 2-D or 3-D), in
    pixels or ``spacing`` units (one per axis); the empty-mask convention of the module docstring."""
    pred, gt = _as_bool_array(pred), _as_bool_array(gt)
    if pred.shape != gt.shape:
        raise ValueError(f'prediction shape {pred.shape} differs from ground-truth shape {gt.shape}')
    if not pred.any() and not gt.any():
        return {'HD95': 0.0, 'NSD': 1.0}
    if not pred.any() or not gt.any():
        return {'HD95': float('nan'), 'NSD': 0.0}
    pred, gt = _around_both(pred, gt)
    scale = np.ones(pred.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    points_pred, points_gt = np.argwhere(_boundary(pred)) * scale, np.argwhere(_boundary(gt)) * scale
    # Exact nearest-boundary distances (the distance transform's), without a transform of the whole box.
    pred_to_gt = cKDTree(points_gt).query(points_pred)[0]
    gt_to_pred = cKDTree(points_pred).query(points_gt)[0]
    hd95 = max(np.percentile(pred_to_gt, 95), np.percentile(gt_to_pred, 95))
    agreeing = np.count_nonzero(pred_to_gt <= tolerance) + np.count_nonzero(gt_to_pred <= tolerance)
    return {'HD95': float(hd95), 'NSD': agreeing / (len(pred_to_gt) + len(gt_to_pred))}


def lesion_counts(pred: Array, gt: Array) -> dict[str, int]:
    """{'lesions', 'detected', 'missed', 'false_lesions'} of one image or volume: the label's connected
    components (8-/26-connected), those a predicted pixel touches, those none does, and the predicted
    components that touch no label pixel."""
    pred, gt = _as_bool_array(pred), _as_bool_array(gt)
    connectivity = ndimage.generate_binary_structure(gt.ndim, gt.ndim)
    lesions, n_lesions = ndimage.label(gt, connectivity)
    found, n_found = ndimage.label(pred, connectivity)
    detected = np.unique(lesions[pred & gt]).size
    hitting = np.unique(found[pred & gt]).size
    return {'lesions': int(n_lesions), 'detected': int(detected), 'missed': int(n_lesions - detected),
            'false_lesions': int(n_found - hitting)}


class SegmentationScores:
    """Per-image segmentation scores, kept so that several reductions can be reported.

    add(name, pred, gt) once per image, then rows() for metrics.csv, mean() (the paper's numbers),
    pooled(), thresholded_jaccard() or summary() for summary.json.
    """

    def __init__(self, surface: bool = False, spacing: Sequence[float] | None = None) -> None:
        """``surface``: also HD95, NSD and the lesion-wise counts per image (metrics.csv's SURFACE_COLUMNS;
        they cost a boundary search, so val selection, which needs only DI, leaves them out)."""
        self._rows = []
        self.surface, self.spacing = surface, spacing

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, name: str, pred: Array, gt: Array) -> Row:
        """Score one image. name: str; pred, gt: boolean masks as in confusion_counts. Returns its row."""
        counts = confusion_counts(pred, gt)
        row = {'name': name, **dict(zip(COUNT_NAMES, counts)), **scores_from_counts(*counts)}
        if self.surface:
            row.update(surface_scores(pred, gt, self.spacing), **lesion_counts(pred, gt))
        self._rows.append(row)
        return row

    def rows(self) -> list[Row]:
        """List of dicts, one per image in insertion order, with keys CSV_COLUMNS (SURFACE_COLUMNS)."""
        return [dict(row) for row in self._rows]

    def _require_images(self, what):
        if not self._rows:
            raise ValueError(f'SegmentationScores.{what}(): no images were added, nothing to reduce')

    def _column(self, key):
        return np.array([row[key] for row in self._rows], dtype=np.float64)

    def mean(self) -> dict[str, float]:
        """Mean over images of each score: {'JA','DI','AC','SE','SP'} -> float. ValueError if empty."""
        self._require_images('mean')
        return {k: float(self._column(k).mean()) for k in SCORE_NAMES}

    def pooled(self) -> dict[str, float]:
        """Scores from the counts summed over all images (one big confusion matrix). ValueError if empty."""
        self._require_images('pooled')
        return scores_from_counts(*(sum(row[k] for row in self._rows) for k in COUNT_NAMES))

    def thresholded_jaccard(self, cut: float = 0.65) -> float:
        """ISIC's thresholded Jaccard: mean over images of JA, where a JA below `cut` counts 0."""
        self._require_images('thresholded_jaccard')
        ja = self._column('JA')
        return float(np.where(ja < cut, 0.0, ja).mean())

    def surface_summary(self) -> dict[str, Any]:
        """HD95 (mean over the images where it is defined, None when none is), HD95_undefined (how many
        have exactly one of the two masks empty), NSD (mean over images) and the lesion-wise counts summed
        over images, with lesion_sensitivity = detected / lesions (None without lesions)."""
        self._require_images('surface_summary')
        hd95 = self._column('HD95')
        defined = hd95[np.isfinite(hd95)]
        totals = {k: int(sum(row[k] for row in self._rows)) for k in LESION_NAMES}
        return {'HD95': float(defined.mean()) if defined.size else None,
                'HD95_undefined': int(hd95.size - defined.size),
                'NSD': float(self._column('NSD').mean()), 'NSD_tolerance_px': SURFACE_TOLERANCE,
                'lesion_wise': {**totals, 'lesion_sensitivity': totals['detected'] / totals['lesions']
                                if totals['lesions'] else None}}

    def summary(self) -> dict[str, Any]:
        """JSON-ready dict: the five means, 'pooled' (dict), 'thresholded_JA' and 'n_images'; with
        ``surface``, also ``surface_summary``'s figures."""
        return {**self.mean(), 'pooled': self.pooled(), 'thresholded_JA': self.thresholded_jaccard(),
                'n_images': len(self), **(self.surface_summary() if self.surface else {})}


def _sweep_counts(probs, gts, thresholds):
    """Counts (tp, fp, fn, tn), each images x thresholds int64 numpy, for one chunk of images.

    Sorting once per image and counting by binary search costs O(P log P + T log P) per image instead of
    comparing every pixel with every threshold.
    """
    n_images = probs.shape[0]
    probs = probs.reshape(n_images, -1)
    gts = gts.reshape(n_images, -1)
    n_pixels = probs.shape[1]
    # Background pixels are set to -inf so they never reach a threshold: the same search then counts TP.
    fg_probs = torch.where(gts, probs, torch.full_like(probs, -float('inf')))
    queries = thresholds.expand(n_images, -1).contiguous()
    predicted = n_pixels - torch.searchsorted(probs.sort(dim=1).values, queries)
    tp = n_pixels - torch.searchsorted(fg_probs.sort(dim=1).values, queries)
    n_fg = gts.sum(dim=1, keepdim=True)
    fp = predicted - tp
    fn = n_fg - tp
    tn = n_pixels - n_fg - fp
    return tuple(c.cpu().numpy() for c in (tp, fp, fn, tn))


def score_sweep(probs: Array, gts: Array, thresholds: Sequence[float] | Array,
                chunk_size: int = 32) -> dict[str, np.ndarray]:
    """Mean-over-images scores for each threshold, masks taken as probs >= threshold.

    probs: float tensor N x H x W in [0, 1] (any device); gts: bool tensor N x H x W, non-zero = lesion;
    thresholds: sequence of T floats; chunk_size: images processed at once (bounds memory).
    Returns {'JA','DI','AC','SE','SP'} -> float64 numpy array of shape (T,), equal to
    SegmentationScores.mean() of binarize(probs, t) for each t.
    """
    probs = torch.as_tensor(probs)
    gts = torch.as_tensor(gts, device=probs.device)
    if probs.ndim != 3 or probs.shape != gts.shape:
        raise ValueError(f'expected probs and gts of one shape N x H x W, got {tuple(probs.shape)} '
                         f'and {tuple(gts.shape)}')
    if probs.shape[0] == 0:
        raise ValueError('score_sweep: no images given')
    if not probs.is_floating_point():
        raise ValueError(f'probs must be a float tensor, got {probs.dtype}')
    if torch.isnan(probs).any():
        raise ValueError('probs contain NaN')
    # Thresholds in the probabilities' dtype, so the comparison matches binarize(probs, t) exactly.
    thresholds = torch.as_tensor(thresholds, dtype=probs.dtype, device=probs.device).reshape(1, -1)
    if not torch.isfinite(thresholds).all():
        raise ValueError('thresholds must be finite')
    sums = {k: np.zeros(thresholds.shape[1]) for k in SCORE_NAMES}
    with torch.no_grad():
        for start in range(0, probs.shape[0], chunk_size):
            chunk = slice(start, start + chunk_size)
            scores = scores_from_counts(*_sweep_counts(probs[chunk], gts[chunk].bool(), thresholds))
            for k in SCORE_NAMES:
                sums[k] += scores[k].sum(axis=0)
    return {k: v / probs.shape[0] for k, v in sums.items()}


def dice_sweep(probs: Array, gts: Array, thresholds: Sequence[float] | Array, chunk_size: int = 32) -> np.ndarray:
    """Mean-over-images Dice (DI) for each threshold: float64 numpy array (T,). Arguments as score_sweep."""
    return score_sweep(probs, gts, thresholds, chunk_size)['DI']


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic, ties given average ranks.

    scores: 1-D sequence of finite floats (higher = more likely lesion); labels: same length, True/1 for
    positive (e.g. testA) and False/0 for negative (e.g. testB) images.
    Returns a float in [0, 1]. Raises ValueError if only one class is present or inputs are malformed.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f'scores and labels must be 1-D of one length, got {scores.shape} and {labels.shape}')
    if not np.isfinite(scores).all():
        raise ValueError('scores must be finite')
    if not np.isin(labels, (0, 1)).all():
        raise ValueError('labels must be boolean or 0/1')
    positive = labels.astype(bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f'roc_auc needs both classes, got {n_pos} positive and {n_neg} negative samples')
    _, inverse, tie_sizes = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based average rank of each distinct value: last rank of its tie group minus half the group's spread.
    average_ranks = np.cumsum(tie_sizes) - (tie_sizes - 1) / 2
    rank_sum = average_ranks[inverse][positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def write_metrics_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write per-image rows (dicts with keys CSV_COLUMNS or SURFACE_COLUMNS, e.g. SegmentationScores.rows()) to
    `path`; an undefined HD95 is written as 'nan'.

    The file is written next to its destination and moved into place with os.replace, so a reader never
    sees a half-written file and a failed write leaves any earlier file untouched.
    """
    columns = SURFACE_COLUMNS if rows and 'HD95' in rows[0] else CSV_COLUMNS

    def write(handle):
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, write, newline='')
