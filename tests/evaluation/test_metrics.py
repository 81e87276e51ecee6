"""Tests for evaluation/metrics.py: hand cases, conventions, and cross-checks against MONAI and scikit-learn."""
import csv
import os

import numpy as np
import pytest
import torch

from evaluation.metrics import (CSV_COLUMNS, SCORE_NAMES, SURFACE_COLUMNS, SURFACE_TOLERANCE, SegmentationScores,
                                binarize, confusion_counts, dice_sweep, lesion_counts, roc_auc, score_sweep,
                                scores_from_counts, surface_scores, write_metrics_csv)

# Hand-worked 4x4 case (rows top to bottom):
#   pred        gt
#   1 1 0 0     0 1 1 0
#   1 1 0 0     0 1 1 0
#   1 0 0 0     0 0 0 0
#   0 0 0 0     0 0 0 0
# TP = 2 (column 1, rows 0-1); FP = 3 (column 0, rows 0-2); FN = 2 (column 2, rows 0-1); TN = 16-7 = 9.
# JA = 2/(2+3+2) = 2/7, DI = 4/(4+3+2) = 4/9, AC = (2+9)/16 = 11/16, SE = 2/4 = 1/2, SP = 9/(9+3) = 3/4.
HAND_PRED = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
HAND_GT = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
HAND_SCORES = {'JA': 2 / 7, 'DI': 4 / 9, 'AC': 11 / 16, 'SE': 1 / 2, 'SP': 3 / 4}


def random_masks(rng, n, size=16):
    """n (pred, gt) pairs of varied foreground density, including sparse and dense ones."""
    pairs = []
    for density_pred, density_gt in zip(rng.uniform(0.02, 0.98, n), rng.uniform(0.02, 0.98, n)):
        pairs.append((rng.random((size, size)) < density_pred, rng.random((size, size)) < density_gt))
    return pairs


def edge_cases(size=16):
    """(pred, gt) pairs at the conventions' edges: empty/full prediction and mask."""
    empty, full = np.zeros((size, size), bool), np.ones((size, size), bool)
    some = empty.copy()
    some[2:6, 3:9] = True
    return [(empty, empty), (empty, some), (some, empty), (full, full), (full, some), (some, full),
            (empty, full), (full, empty)]


def test_hand_case_counts_and_scores():
    assert confusion_counts(HAND_PRED, HAND_GT) == (2, 3, 2, 9)
    assert scores_from_counts(2, 3, 2, 9) == pytest.approx(HAND_SCORES)


def test_torch_and_numpy_inputs_agree():
    assert confusion_counts(torch.from_numpy(HAND_PRED), torch.from_numpy(HAND_GT)) == (2, 3, 2, 9)
    assert confusion_counts(HAND_PRED.astype(np.uint8), HAND_GT.astype(np.float32)) == (2, 3, 2, 9)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r'\(4, 4\).*\(4, 5\)'):
        confusion_counts(HAND_PRED, np.zeros((4, 5), bool))


def test_both_empty_scores_one_everywhere():
    empty = np.zeros((16, 16), bool)
    assert confusion_counts(empty, empty) == (0, 0, 0, 256)
    assert scores_from_counts(*confusion_counts(empty, empty)) == {k: 1.0 for k in SCORE_NAMES}


def test_empty_prediction_on_lesion():
    gt = np.zeros((16, 16), bool)
    gt[4:8, 4:12] = True  # 32 lesion pixels
    scores = scores_from_counts(*confusion_counts(np.zeros_like(gt), gt))
    assert scores == pytest.approx({'JA': 0.0, 'DI': 0.0, 'AC': 224 / 256, 'SE': 0.0, 'SP': 1.0})


def test_all_foreground_prediction_and_mask():
    full = np.ones((16, 16), bool)
    assert confusion_counts(full, full) == (256, 0, 0, 0)
    # No negatives at all: SP's denominator is 0 and scores 1.
    assert scores_from_counts(256, 0, 0, 0) == {k: 1.0 for k in SCORE_NAMES}


def test_zero_denominators_score_one_vectorised():
    tp, fp, fn, tn = (np.array(c) for c in ([0, 0, 0, 5, 0], [0, 0, 3, 0, 0], [0, 4, 0, 0, 0],
                                            [0, 0, 0, 0, 7]))
    scores = scores_from_counts(tp, fp, fn, tn)
    np.testing.assert_allclose(scores['JA'], [1, 0, 0, 1, 1])
    np.testing.assert_allclose(scores['DI'], [1, 0, 0, 1, 1])
    np.testing.assert_allclose(scores['AC'], [1, 0, 0, 1, 1])
    np.testing.assert_allclose(scores['SE'], [1, 0, 1, 1, 1])
    np.testing.assert_allclose(scores['SP'], [1, 1, 0, 1, 1])


def test_vectorised_matches_scalar():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(4, 6, 3))  # includes zeros, hence zero denominators
    vectorised = scores_from_counts(*counts)
    for index in np.ndindex(counts.shape[1:]):
        scalar = scores_from_counts(*(int(c[index]) for c in counts))
        assert scalar == pytest.approx({k: vectorised[k][index] for k in SCORE_NAMES})


def test_matches_monai_where_defined():
    pytest.importorskip('monai', reason='MONAI (dev requirement) is needed for the cross-check')
    from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix
    rng = np.random.default_rng(1)
    pairs = random_masks(rng, 50) + edge_cases()
    preds = torch.from_numpy(np.stack([p for p, _ in pairs])[:, None]).float()
    gts = torch.from_numpy(np.stack([g for _, g in pairs])[:, None]).float()
    matrix = get_confusion_matrix(preds, gts, include_background=True)  # B x 1 x (tp, fp, tn, fn)
    monai_names = {'JA': 'threat score', 'DI': 'f1 score', 'AC': 'accuracy', 'SE': 'sensitivity',
                   'SP': 'specificity'}
    monai_scores = {k: compute_confusion_matrix_metric(name, matrix)[:, 0].numpy()
                    for k, name in monai_names.items()}
    n_compared = 0
    for i, (pred, gt) in enumerate(pairs):
        tp, fp, fn, tn = confusion_counts(pred, gt)
        assert (tp, fp, tn, fn) == tuple(int(c) for c in matrix[i, 0])
        ours = scores_from_counts(tp, fp, fn, tn)
        for k in SCORE_NAMES:
            if np.isnan(monai_scores[k][i]):
                assert ours[k] == 1.0  # MONAI leaves 0/0 undefined; our convention scores 1
            else:
                assert ours[k] == pytest.approx(float(monai_scores[k][i]), abs=1e-6)
                n_compared += 1
    # Nearly all comparisons must be real ones, not NaN skips.
    assert n_compared >= 5 * 50


def test_segmentation_scores_reductions():
    scores = SegmentationScores()
    empty = np.zeros((4, 4), bool)
    scores.add('hand', HAND_PRED, HAND_GT)
    scores.add('empty', empty, empty)
    assert len(scores) == 2
    rows = scores.rows()
    assert [r['name'] for r in rows] == ['hand', 'empty']
    assert set(rows[0]) == set(CSV_COLUMNS)
    assert (rows[0]['TP'], rows[0]['FP'], rows[0]['FN'], rows[0]['TN']) == (2, 3, 2, 9)
    assert scores.mean() == pytest.approx({k: (v + 1) / 2 for k, v in HAND_SCORES.items()})
    # Pooled counts are (2, 3, 2, 25): the empty image only adds true negatives.
    assert scores.pooled() == pytest.approx(scores_from_counts(2, 3, 2, 25))
    # JA = 2/7 falls below 0.65 and counts 0; the empty image keeps its 1.
    assert scores.thresholded_jaccard() == pytest.approx(0.5)
    assert scores.thresholded_jaccard(cut=0.2) == pytest.approx((2 / 7 + 1) / 2)
    summary = scores.summary()
    assert summary['n_images'] == 2
    assert summary['pooled'] == scores.pooled()
    assert summary['thresholded_JA'] == pytest.approx(0.5)
    assert {k: summary[k] for k in SCORE_NAMES} == scores.mean()


def test_empty_collection_raises():
    with pytest.raises(ValueError, match='no images'):
        SegmentationScores().mean()
    with pytest.raises(ValueError, match='no images'):
        SegmentationScores().summary()


@pytest.mark.parametrize('chunk_size', [1, 3, 32])
def test_sweep_equals_per_image_loop(chunk_size):
    generator = torch.Generator().manual_seed(2)
    n, size = 7, 24
    gts = torch.rand(n, size, size, generator=generator) < torch.rand(n, 1, 1, generator=generator)
    probs = (gts.float() * 0.5 + torch.rand(n, size, size, generator=generator) * 0.5)
    gts[0] = False                # empty mask
    probs[1] = 0.0                # prediction empty at every threshold above 0
    probs[2] = torch.round(probs[2] * 4) / 4  # values exactly on thresholds: ties with >=
    thresholds = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    swept = score_sweep(probs, gts, thresholds, chunk_size=chunk_size)
    for j, threshold in enumerate(thresholds):
        loop = SegmentationScores()
        for i in range(n):
            loop.add(str(i), binarize(probs[i], threshold), gts[i])
        assert {k: swept[k][j] for k in SCORE_NAMES} == pytest.approx(loop.mean(), abs=1e-12)
    np.testing.assert_array_equal(dice_sweep(probs, gts, thresholds, chunk_size=chunk_size), swept['DI'])


def test_sweep_rejects_bad_input():
    with pytest.raises(ValueError, match='N x H x W'):
        dice_sweep(torch.rand(2, 4, 4), torch.zeros(2, 4, 5, dtype=torch.bool), [0.5])


def test_roc_auc_hand_case_with_ties():
    # Pairs (pos, neg): 0.8 beats 0.3 and 0.5 -> 2; 0.5 ties 0.5 -> 0.5, beats 0.3 -> 1; total 3.5 / 4.
    assert roc_auc([0.8, 0.5, 0.5, 0.3], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert roc_auc([0.2, 0.2, 0.2], [True, False, True]) == pytest.approx(0.5)


def test_roc_auc_needs_both_classes():
    with pytest.raises(ValueError, match='both classes'):
        roc_auc([0.1, 0.9], [1, 1])


def test_roc_auc_matches_sklearn():
    sklearn_metrics = pytest.importorskip('sklearn.metrics', reason='scikit-learn (dev requirement) '
                                                                    'is needed for the cross-check')
    rng = np.random.default_rng(3)
    labels = rng.random(60) < 0.4
    scores = np.round(rng.random(60) + 0.3 * labels, 1)  # rounding creates many ties
    assert roc_auc(scores, labels) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores))


def test_csv_round_trip_and_no_temp_file(tmp_path):
    scores = SegmentationScores()
    scores.add('hand', HAND_PRED, HAND_GT)
    scores.add('empty', np.zeros((4, 4), bool), np.zeros((4, 4), bool))
    path = tmp_path / 'metrics.csv'
    write_metrics_csv(str(path), scores.rows())
    assert os.listdir(tmp_path) == ['metrics.csv']
    with open(path, newline='') as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        read = list(reader)
    for written, row in zip(scores.rows(), read):
        assert row['name'] == written['name']
        assert all(int(row[k]) == written[k] for k in ('TP', 'FP', 'FN', 'TN'))
        assert all(float(row[k]) == written[k] for k in SCORE_NAMES)


def test_failed_csv_write_keeps_old_file(tmp_path):
    path = tmp_path / 'metrics.csv'
    path.write_text('old\n')
    with pytest.raises(ValueError):
        write_metrics_csv(str(path), [{'name': 'x', 'unknown_column': 1}])
    assert path.read_text() == 'old\n'
    assert os.listdir(tmp_path) == ['metrics.csv']


def _blobs(rng, shape, n_blobs):
    """A bool mask of ``n_blobs`` random ellipsoid-ish blobs (varied boundaries, several components)."""
    grid = np.indices(shape).astype(float)
    mask = np.zeros(shape, bool)
    for _ in range(n_blobs):
        centre = rng.uniform(0, shape[0], len(shape))
        radii = rng.uniform(1.5, shape[0] / 4, len(shape))
        mask |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    return mask


def _monai(pred, gt, spacing=None):
    """HD95 and NSD at 2 px by MONAI (its own code, with its optional dependencies absent)."""
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice
    batch = [torch.as_tensor(m[None, None]) for m in (pred, gt)]
    hd95 = compute_hausdorff_distance(*batch, percentile=95, include_background=True, spacing=spacing)
    nsd = compute_surface_dice(*(b.float() for b in batch), class_thresholds=[SURFACE_TOLERANCE],
                               include_background=True, spacing=spacing)
    return float(hd95), float(nsd)


@pytest.mark.filterwarnings('ignore::FutureWarning')
@pytest.mark.parametrize('shape, spacing', [((40, 40), None), ((48, 32), None), ((16, 16, 16), None),
                                            ((16, 16, 16), (1.0, 0.5, 2.0))])
def test_hd95_and_surface_dice_equal_monais(shape, spacing):
    rng = np.random.default_rng(len(shape) + (spacing is not None))
    for _ in range(6):
        pred, gt = _blobs(rng, shape, rng.integers(1, 4)), _blobs(rng, shape, rng.integers(1, 4))
        if not pred.any() or not gt.any():
            continue
        ours = surface_scores(pred, gt, spacing)
        hd95, nsd = _monai(pred, gt, spacing)
        assert ours['HD95'] == pytest.approx(hd95, abs=1e-4) and ours['NSD'] == pytest.approx(nsd, abs=1e-6)


def test_surface_scores_of_a_shifted_square_and_of_empty_masks():
    gt = np.zeros((20, 20), bool)
    gt[5:10, 5:10] = True
    # One pixel to the right: every boundary pixel is within 1 px of the other boundary.
    assert surface_scores(np.roll(gt, 1, axis=1), gt) == {'HD95': 1.0, 'NSD': 1.0}
    assert surface_scores(np.roll(gt, 4, axis=1), gt)['NSD'] < 1
    empty = np.zeros_like(gt)
    assert surface_scores(empty, empty) == {'HD95': 0.0, 'NSD': 1.0}
    for pred, label in ((empty, gt), (gt, empty)):
        scores = surface_scores(pred, label)
        assert np.isnan(scores['HD95']) and scores['NSD'] == 0.0
    # A mask on the array's edge: its edge pixels are boundary, as in MONAI.
    assert surface_scores(np.ones((6, 6), bool), np.ones((6, 6), bool)) == {'HD95': 0.0, 'NSD': 1.0}


def test_lesion_counts_by_connected_components_in_images_and_volumes():
    gt = np.zeros((12, 12), bool)
    gt[1:3, 1:3] = gt[6:8, 6:8] = gt[10, 0] = True      # three lesions
    pred = np.zeros_like(gt)
    pred[2, 2] = pred[7:9, 7:9] = True                    # touches two of them
    pred[0, 10:12] = pred[4, 11] = True                   # two false lesions
    pred[9, 1] = True                                     # diagonal to gt[10, 0]: its own component, no overlap
    assert lesion_counts(pred, gt) == {'lesions': 3, 'detected': 2, 'missed': 1, 'false_lesions': 3}
    volume = np.zeros((4, 6, 6), bool)
    volume[0, 0, 0] = volume[1, 1, 1] = True              # 26-connected: one lesion across slices
    volume[3, 4:6, 4:6] = True
    assert lesion_counts(volume[::-1].copy(), volume) == {'lesions': 2, 'detected': 0, 'missed': 2,
                                                           'false_lesions': 2}
    assert lesion_counts(volume, volume) == {'lesions': 2, 'detected': 2, 'missed': 0, 'false_lesions': 0}


def test_surface_columns_add_to_metrics_csv_and_summary_without_changing_the_others(tmp_path):
    rng = np.random.default_rng(3)
    pairs = [(_blobs(rng, (24, 24), 2), _blobs(rng, (24, 24), 2)) for _ in range(4)]
    empty = np.zeros((24, 24), bool)
    pairs += [(empty, empty), (pairs[0][0], empty)]       # HD95 0 and undefined (NaN)
    plain, surface = SegmentationScores(), SegmentationScores(surface=True)
    for index, (pred, gt) in enumerate(pairs):
        plain.add(f'i{index}', pred, gt)
        surface.add(f'i{index}', pred, gt)
    assert [{k: row[k] for k in CSV_COLUMNS} for row in surface.rows()] == plain.rows()
    summary = surface.summary()
    assert {k: summary[k] for k in plain.summary()} == plain.summary()
    hd95 = [row['HD95'] for row in surface.rows()]
    assert summary['HD95'] == pytest.approx(np.nanmean(hd95)) and summary['HD95_undefined'] == 1
    assert summary['NSD'] == pytest.approx(np.mean([row['NSD'] for row in surface.rows()]))
    totals = {k: sum(row[k] for row in surface.rows()) for k in ('lesions', 'detected', 'missed', 'false_lesions')}
    assert summary['lesion_wise'] == {**totals, 'lesion_sensitivity': totals['detected'] / totals['lesions']}
    path = tmp_path / 'metrics.csv'
    write_metrics_csv(str(path), surface.rows())
    with open(path, newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == SURFACE_COLUMNS and rows[-1]['HD95'] == 'nan' and rows[-2]['HD95'] == '0.0'
    only_empty = SegmentationScores(surface=True)
    only_empty.add('e', pairs[0][0], empty)
    assert only_empty.summary()['HD95'] is None and only_empty.summary()['lesion_wise']['lesion_sensitivity'] is None
