"""Choosing the image-level gate (an empty mask for an image whose lesion score is below a threshold;
evaluation/selection.py applies it) on the selection set: its lesion images together with normal images held
out of training (train.py --hold_out_normals).

Every image is scored as util/metrics scores it: a normal image against its empty label (Dice 1 for an
empty mask, 0 for any lesion pixel), a lesion image the gate empties by its empty mask's Dice.
"""
from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.metrics import SegmentationScores
from evaluation.selection import apply_rule

# Candidate thresholds: these quantiles of the selection set's image-level scores.
QUANTILES = np.linspace(0.02, 0.98, 49)


def _dice(items, masks):
    scores = SegmentationScores()
    for item, mask in zip(items, masks):
        scores.add(item['name'], mask, item['gt'])
    return np.array([row['DI'] for row in scores.rows()])


def choose_gate(rule: dict[str, Any],
                items: Sequence[dict[str, Any]]) -> tuple[dict[str, float] | None, dict[str, Any]]:
    """(gate, figures) for ``rule`` (a selection without a gate) on ``items``: the selection set's
    predict_split items (maps, ``score``, ``gt``; held-out normal images with an empty ``gt`` and
    ``normal`` True). ``gate`` is {'threshold': t} for the candidate with the best mean Dice, or None when
    none beats no gate (a tie keeps no gate); ``figures`` are that mean with and without it."""
    masks = [apply_rule(rule, item['maps'][rule['map_mode']])[0] for item in items]
    kept = _dice(items, masks)
    emptied = _dice(items, [np.zeros_like(mask) for mask in masks])
    scores = np.array([item['score'] for item in items], dtype=np.float64)
    best, best_DI = None, kept.mean()
    for threshold in np.unique(np.quantile(scores, QUANTILES)):
        mean = np.where(scores < threshold, emptied, kept).mean()
        if mean > best_DI:
            best, best_DI = float(threshold), mean
    normal = np.array([item.get('normal', False) for item in items])
    marked = np.array([mask.any() for mask in masks])
    passed = scores >= (best if best is not None else -np.inf)
    figures = {'held_out_normals': int(normal.sum()), 'lesion_images': int((~normal).sum()),
               'DI_without_gate': float(kept.mean()), 'DI_with_gate': float(best_DI) if best is not None else None,
               'normals_with_lesion_without_gate': float(marked[normal].mean()) if normal.any() else None,
               'normals_with_lesion_with_gate': float((marked & passed)[normal].mean()) if normal.any() else None,
               'lesion_images_gated': int((~passed & ~normal).sum())}
    return ({'threshold': best} if best is not None else None), figures
