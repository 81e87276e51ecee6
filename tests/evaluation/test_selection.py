"""Tests for evaluation/selection.py: Otsu, turning maps into masks, and the val choice of
mode/threshold/post-processing."""
import numpy as np
import pytest
from scipy import ndimage

from evaluation.metrics import SegmentationScores
from evaluation.postprocess import POSTPROCESSING
from evaluation.selection import apply_rule, candidate_rules, gate_rejects, otsu_threshold, score_rule, select

SIZE = 32
RULE_KEYS = {'map_mode', 'binarize', 'threshold', 'postprocess', 'step', 'checkpoint', 'val_DI'}


def _gt(rng):
    """A bool lesion mask: one or two random rectangles."""
    gt = np.zeros((SIZE, SIZE), bool)
    for _ in range(int(rng.integers(1, 3))):
        top, left = rng.integers(2, SIZE - 12, size=2)
        height, width = rng.integers(5, 10, size=2)
        gt[top:top + height, left:left + width] = True
    return gt


def _items(seed=0, n=4, noise_seed=100):
    """Synthetic val items: map 'good' is the ground truth blurred (and squashed into 0.1..0.6), 'noise'
    is uniform noise, 'zeros' is all 0."""
    rng, noise = np.random.default_rng(seed), np.random.default_rng(noise_seed)
    items = []
    for index in range(n):
        gt = _gt(rng)
        good = 0.1 + 0.5 * ndimage.gaussian_filter(gt.astype(np.float32), 1.5)
        items.append({'name': f'val_{index}', 'gt': gt,
                      'maps': {'good': good.astype(np.float32),
                               'noise': noise.random((SIZE, SIZE)).astype(np.float32),
                               'zeros': np.zeros((SIZE, SIZE), np.float32)}})
    return items


def _mean_dice(masks, items):
    scores = SegmentationScores()
    for mask, item in zip(masks, items):
        scores.add(item['name'], mask, item['gt'])
    return scores.mean()['DI']


def test_a_gate_empties_the_mask_of_an_image_scored_below_it():
    prob = _awkward_map(0)
    rule = {'binarize': 'fixed', 'threshold': 0.5, 'postprocess': 'none'}
    gated = dict(rule, gate={'threshold': 0.3})
    assert not gate_rejects(rule, 0.0) and not gate_rejects(gated, None)
    assert gate_rejects(gated, 0.29) and not gate_rejects(gated, 0.3)
    np.testing.assert_array_equal(apply_rule(gated, prob, score=0.3)[0], apply_rule(rule, prob)[0])
    mask, calibrated = apply_rule(gated, prob, score=0.29)
    assert apply_rule(rule, prob)[0].any() and not mask.any() and calibrated.max() < 0.5


def test_otsu_threshold_splits_a_bimodal_map():
    rng = np.random.default_rng(0)
    gt = _gt(rng)
    prob = np.where(gt, rng.normal(0.8, 0.03, gt.shape), rng.normal(0.2, 0.03, gt.shape)).astype(np.float32)
    threshold = otsu_threshold(prob)
    # Any threshold in the gap between the two modes is optimal; it must separate them exactly.
    assert prob[~gt].max() <= threshold < prob[gt].min()
    assert np.array_equal(prob >= threshold, gt)  # the decision apply_rule makes


def test_otsu_threshold_ignores_the_zero_background_and_constant_maps():
    prob = np.zeros((SIZE, SIZE), np.float32)
    prob[4:20, 4:20] = 0.3
    prob[8:12, 8:12] = 0.9
    assert 0.3 <= otsu_threshold(prob) < 0.9  # 0-valued background does not pull it down
    assert otsu_threshold(np.zeros((8, 8), np.float32)) == 0.5
    assert otsu_threshold(np.full((8, 8), 0.2, np.float32)) == 0.5


def _awkward_map(seed):
    """A map whose thresholded mask has several blobs and holes, so every post-processing changes it."""
    rng = np.random.default_rng(seed)
    prob = ndimage.gaussian_filter(rng.random((SIZE, SIZE)), 1.2)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    prob[2:14, 2:14] = 0.9
    prob[6:9, 6:9] = 0.05  # a hole in the big blob
    return prob.astype(np.float32)


@pytest.mark.parametrize('postprocess', sorted(POSTPROCESSING))
@pytest.mark.parametrize('binarize,threshold', [('fixed', 0.55), ('fixed', 0.3), ('otsu', None)])
def test_apply_rule_mask_is_exactly_calibrated_at_least_one_half(postprocess, binarize, threshold):
    for seed in range(3):
        prob = _awkward_map(seed)
        rule = {'binarize': binarize, 'threshold': threshold, 'postprocess': postprocess}
        mask, calibrated = apply_rule(rule, prob)
        assert mask.dtype == bool and mask.shape == prob.shape
        assert calibrated.dtype == np.float32 and calibrated.min() >= 0 and calibrated.max() <= 1
        assert np.array_equal(mask, calibrated >= 0.5), (seed, rule)
        # Without post-processing the mask is the plain threshold decision.
        if postprocess == 'none':
            cut = threshold if binarize == 'fixed' else otsu_threshold(prob)
            assert np.array_equal(mask, prob >= cut)


def test_candidate_rules_are_sorted_and_cover_every_post_processing():
    items = _items()
    ranked = candidate_rules(items, 'good')
    dice = [d for _, d in ranked]
    assert dice == sorted(dice, reverse=True)
    assert {rule['postprocess'] for rule, _ in ranked} == set(POSTPROCESSING)
    assert {rule['binarize'] for rule, _ in ranked} == {'fixed', 'otsu'}
    assert all(rule['map_mode'] == 'good' for rule, _ in ranked)
    best, best_dice = ranked[0]
    assert best_dice > 0.9  # the blurred truth, thresholded well, is nearly the truth
    assert best_dice == pytest.approx(score_rule(best, items, 'good'))
    assert best_dice == pytest.approx(_mean_dice([apply_rule(best, it['maps']['good'])[0] for it in items], items))


def test_select_picks_the_checkpoint_and_mode_that_match_the_truth():
    good, bad = _items(), _items()
    for item in bad:  # at the other checkpoint the 'good' map is noise too
        item['maps']['good'] = item['maps']['noise']
    rule = select({(2, 'iter_2.pt'): bad, (4, 'iter_4.pt'): good}, ['noise', 'zeros', 'good'])
    assert RULE_KEYS <= set(rule)
    assert (rule['step'], rule['checkpoint'], rule['map_mode']) == (4, 'iter_4.pt', 'good')
    assert rule['val_DI'] > 0.9 and rule['postprocess'] in POSTPROCESSING
    assert rule['binarize'] in ('fixed', 'otsu')
    assert rule['binarize'] == 'otsu' or 0 < rule['threshold'] < 1
    assert rule['val_DI'] == pytest.approx(score_rule(rule, good, 'good'))
    # Every (checkpoint, mode) was ranked, best first.
    ranking = rule['ranking']
    assert {(r['step'], r['map_mode']) for r in ranking} == {(s, m) for s in (2, 4) for m in ('noise', 'zeros', 'good')}
    assert [r['val_DI_sweep'] for r in ranking] == sorted((r['val_DI_sweep'] for r in ranking), reverse=True)
    assert (ranking[0]['step'], ranking[0]['map_mode']) == (4, 'good')


def test_select_breaks_ties_by_order_and_is_repeatable():
    items = _items()
    same = {(2, 'a.pt'): items, (4, 'b.pt'): items}
    first = select(same, ['good', 'noise'])
    assert (first['step'], first['checkpoint'], first['map_mode']) == (2, 'a.pt', 'good')
    assert select(same, ['good', 'noise']) == first
    # The earlier checkpoint in the given order wins a tie, whichever step it has.
    reordered = select({(4, 'b.pt'): items, (2, 'a.pt'): items}, ['good', 'noise'])
    assert (reordered['step'], reordered['checkpoint']) == (4, 'b.pt')
    # Identical maps under two mode names: the earlier mode wins.
    twins = [dict(item, maps={'first': item['maps']['good'], 'second': item['maps']['good'].copy()})
             for item in items]
    assert select({(1, 'c.pt'): twins}, ['first', 'second'])['map_mode'] == 'first'
    assert select({(1, 'c.pt'): twins}, ['second', 'first'])['map_mode'] == 'second'

