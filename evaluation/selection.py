"""Turn lesion maps into masks, and choose how on val: map mode, threshold, post-processing.

Only val's labels are ever read here; test.py applies the chosen rule unchanged to the test splits.
"""
from typing import Optional

import numpy as np
import torch
from skimage.filters import threshold_otsu

from evaluation.inference import stack_by_shape
from evaluation.metrics import SegmentationScores, binarize, dice_sweep
from evaluation.postprocess import POSTPROCESSING, calibrate, postprocess

# Fixed thresholds are tried at these quantiles of val's foreground map values: map modes have
# very different value ranges, so a fixed 0..1 grid would waste most of its points.
QUANTILES = np.concatenate([np.linspace(0.30, 0.95, 27), np.linspace(0.955, 0.995, 9)])
TOP_CANDIDATES = 3


# What a stored selection says about the images it was chosen on; served on other data, it moves under 'stored'.
PROVENANCE_KEYS = ('chosen_on', 'select_few', 'hold_out_normals', 'val_DI', 'gate_choice', 'ranking')


def served_selection(stored: dict, path: str) -> dict:
    """The rule test.py records when it serves the choices ``stored`` in weights file ``path`` unchanged:
    the decision (map, threshold, post-processing, gate, CRF) at the top, ``chosen_on`` 'stored',
    ``stored_in`` the file, and where the file's choices were made under ``stored``."""
    decision = {key: value for key, value in stored.items() if key not in PROVENANCE_KEYS}
    return dict(decision, checkpoint=path, chosen_on='stored', stored_in=path,
                stored={key: stored[key] for key in PROVENANCE_KEYS if key in stored})


def otsu_threshold(prob: np.ndarray) -> float:
    """Per-image Otsu threshold of a map (its foreground values); 0.5 for a constant map."""
    values = prob[prob > 0]
    if values.size < 2 or values.min() == values.max():
        return 0.5
    return float(threshold_otsu(values))


def image_threshold(rule: dict, prob: np.ndarray) -> float:
    """The threshold ``rule`` ({'binarize': 'fixed'|'otsu', 'threshold': t}) gives for one map."""
    return rule['threshold'] if rule['binarize'] == 'fixed' else otsu_threshold(prob)


def gate_rejects(rule: dict, score: Optional[float]) -> bool:
    """True when ``rule`` holds an image-level gate (``rule['gate'] = {'threshold': t}``) and the image's
    lesion ``score`` is below ``t``: the image gets an empty mask, and no CRF may grow one."""
    gate = rule.get('gate')
    return bool(gate) and score is not None and score < gate['threshold']


def apply_rule(rule: dict, prob: np.ndarray, score: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """One map (and its image-level lesion ``score``, for a rule with a gate) -> (bool mask, calibrated
    probability map whose >= 0.5 region equals the mask)."""
    threshold = image_threshold(rule, prob)
    mask = postprocess(np.asarray(binarize(prob, threshold)), rule['postprocess'])
    if gate_rejects(rule, score):
        mask = np.zeros_like(mask)
    calibrated = calibrate(prob, threshold).astype(np.float32)
    # Post-processing adds or removes pixels; move them across 0.5 so the map and mask agree. The
    # bound below 0.5 is taken in float32: float64's nextafter(0.5, 0) rounds back to 0.5 in float32.
    below = np.nextafter(np.float32(0.5), np.float32(0))
    calibrated = np.where(mask, np.maximum(calibrated, np.float32(0.5)), np.minimum(calibrated, below))
    return mask, calibrated.astype(np.float32)


def score_rule(rule: dict, items: list[dict], mode: str) -> float:
    """Mean DI of ``rule`` on labelled items (per-image loop; used for the few finalists)."""
    scores = SegmentationScores()
    for item in items:
        scores.add(item['name'], apply_rule(rule, item['maps'][mode])[0], item['gt'])
    return scores.mean()['DI']


def _threshold_grid(items, mode):
    values = np.concatenate([item['maps'][mode][item['maps'][mode] > 0] for item in items])
    if values.size == 0:
        return np.array([0.5])
    return np.unique(np.quantile(values, QUANTILES))


def _sweep(items, mode, thresholds):
    """Mean DI per fixed threshold over all items (vectorised, images grouped by shape)."""
    total = np.zeros(len(thresholds))
    for probs, gts in stack_by_shape(items, mode).values():
        total += dice_sweep(probs, gts, torch.as_tensor(thresholds, dtype=torch.float32)) * len(probs)
    return total / len(items)


def candidate_rules(items: list[dict], mode: str) -> list[tuple[dict, float]]:
    """The best fixed thresholds (without post-processing) and Otsu, each with every
    post-processing: [(rule, mean val DI)], best first."""
    thresholds = _threshold_grid(items, mode)
    dice = _sweep(items, mode, thresholds)
    best = [float(thresholds[i]) for i in np.argsort(-dice, kind='stable')[:TOP_CANDIDATES]]
    bases = [{'binarize': 'fixed', 'threshold': t} for t in best] + [{'binarize': 'otsu', 'threshold': None}]
    rules = [dict(base, postprocess=name, map_mode=mode) for base in bases for name in POSTPROCESSING]
    scored = [(rule, score_rule(rule, items, mode)) for rule in rules]
    return sorted(scored, key=lambda pair: -pair[1])


def select(items_by_checkpoint: dict[tuple[int, Optional[str]], list[dict]], modes: list[str]) -> dict:
    """Choose checkpoint, map mode, threshold and post-processing with the best mean val DI.

    ``items_by_checkpoint``: {(step, path): predict_split items of val}. A cheap vectorised sweep
    ranks every (checkpoint, mode); only the best few go through the per-image post-processing
    search. Ties keep the earlier (checkpoint, mode), so the choice is deterministic.
    """
    ranked = []
    for (step, path), items in items_by_checkpoint.items():
        for mode in modes:
            dice = _sweep(items, mode, _threshold_grid(items, mode)).max()
            ranked.append((float(dice), step, path, mode))
    ranked.sort(key=lambda entry: -entry[0])
    best = None
    for _, step, path, mode in ranked[:TOP_CANDIDATES]:
        rule, dice = candidate_rules(items_by_checkpoint[(step, path)], mode)[0]
        if best is None or dice > best['val_DI']:
            best = dict(rule, step=step, checkpoint=path, val_DI=dice)
    best['ranking'] = [{'step': s, 'map_mode': m, 'val_DI_sweep': d} for d, s, _, m in ranked]
    return best


def select_fixed_rule(items_by_source: dict[tuple[int, Optional[str]], list[dict]], modes: list[str],
                      rule: dict) -> dict:
    """For a model whose ``fixed_rule`` says how its maps become masks: choose only the source and map
    mode with the best mean val DI of that rule (ties keep the first)."""
    ranked = [(score_rule(dict(rule, map_mode=mode), items, mode), step, path, mode)
              for (step, path), items in items_by_source.items() for mode in modes]
    dice, step, path, mode = max(ranked, key=lambda entry: entry[0])
    return dict(rule, map_mode=mode, step=step, checkpoint=path, val_DI=dice,
                ranking=[{'step': s, 'map_mode': m, 'val_DI': d} for d, s, _, m in ranked])
