"""Segmentation and detection metrics (see docs/DESIGN.md, "Metrics").

Per image, from the confusion counts:
    JA = TP/(TP+FP+FN)   DI = 2TP/(2TP+FP+FN)   AC = (TP+TN)/all
    SE = TP/(TP+FN)      SP = TN/(TN+FP)
Any zero denominator scores 1, so an empty prediction on an empty mask scores JA = DI = 1 (ISIC).
A probability map becomes a mask by ``probs >= threshold`` (see ``binarize``).
"""
import csv

import numpy as np
import torch

from util.atomic import atomic_write

SCORE_NAMES = ('JA', 'DI', 'AC', 'SE', 'SP')
COUNT_NAMES = ('TP', 'FP', 'FN', 'TN')
CSV_COLUMNS = ('name',) + COUNT_NAMES + SCORE_NAMES


def binarize(probs, threshold):
    """Probability map (numpy array or torch tensor) -> boolean mask of the same type: probs >= threshold."""
    return probs >= threshold


def _as_bool_array(mask):
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool, copy=False)


def confusion_counts(pred, gt):
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


def scores_from_counts(tp, fp, fn, tn):
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


class SegmentationScores:
    """Per-image segmentation scores, kept so that several reductions can be reported.

    add(name, pred, gt) once per image, then rows() for metrics.csv, mean() (the paper's numbers),
    pooled(), thresholded_jaccard() or summary() for summary.json.
    """

    def __init__(self):
        self._rows = []

    def __len__(self):
        return len(self._rows)

    def add(self, name, pred, gt):
        """Score one image. name: str; pred, gt: boolean masks as in confusion_counts. Returns its row."""
        counts = confusion_counts(pred, gt)
        row = {'name': name, **dict(zip(COUNT_NAMES, counts)), **scores_from_counts(*counts)}
        self._rows.append(row)
        return row

    def rows(self):
        """List of dicts, one per image in insertion order, with keys CSV_COLUMNS."""
        return [dict(row) for row in self._rows]

    def _require_images(self, what):
        if not self._rows:
            raise ValueError(f'SegmentationScores.{what}(): no images were added, nothing to reduce')

    def _column(self, key):
        return np.array([row[key] for row in self._rows], dtype=np.float64)

    def mean(self):
        """Mean over images of each score: {'JA','DI','AC','SE','SP'} -> float. ValueError if empty."""
        self._require_images('mean')
        return {k: float(self._column(k).mean()) for k in SCORE_NAMES}

    def pooled(self):
        """Scores from the counts summed over all images (one big confusion matrix). ValueError if empty."""
        self._require_images('pooled')
        return scores_from_counts(*(sum(row[k] for row in self._rows) for k in COUNT_NAMES))

    def thresholded_jaccard(self, cut=0.65):
        """ISIC's thresholded Jaccard: mean over images of JA, where a JA below `cut` counts 0."""
        self._require_images('thresholded_jaccard')
        ja = self._column('JA')
        return float(np.where(ja < cut, 0.0, ja).mean())

    def summary(self):
        """JSON-ready dict: the five means, 'pooled' (dict), 'thresholded_JA' and 'n_images'."""
        return {**self.mean(), 'pooled': self.pooled(),
                'thresholded_JA': self.thresholded_jaccard(), 'n_images': len(self)}


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


def score_sweep(probs, gts, thresholds, chunk_size=32):
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


def dice_sweep(probs, gts, thresholds, chunk_size=32):
    """Mean-over-images Dice (DI) for each threshold: float64 numpy array (T,). Arguments as score_sweep."""
    return score_sweep(probs, gts, thresholds, chunk_size)['DI']


def roc_auc(scores, labels):
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


def write_metrics_csv(path, rows):
    """Write per-image rows (dicts with keys CSV_COLUMNS, e.g. SegmentationScores.rows()) to `path`.

    The file is written next to its destination and moved into place with os.replace, so a reader never
    sees a half-written file and a failed write leaves any earlier file untouched.
    """
    def write(handle):
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, write, newline='')
