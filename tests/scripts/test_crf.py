"""Tests for refinement/crf_utils.py, options/crf_options.py and crf.py on tiny synthetic runs (32 px)."""
import csv
import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crf
from conftest import REPO_ROOT, Terminal
from fake_tested_run import BORDER, SIZE, TEST_RULE, crf_argv, make_tested_run, png, scene
from data.image_io import read_mask, resize_mask
from refinement import crf_utils
from refinement.crf_utils import (COLOUR_WEIGHTS, CRFParams, crf_pool, dense_crf, param_grid, parse_crf_params,
                            read_prob, refine_arrays, refine_many, search_params)
from evaluation.metrics import SCORE_NAMES, SURFACE_COLUMNS, confusion_counts, scores_from_counts
from evaluation.postprocess import foreground_mask, largest_component

def _dice(pred, gt):
    return scores_from_counts(*confusion_counts(pred, gt))['DI']


def _crf_dir(root):
    return root / 'results' / 'ds' / 'f1' / 'run' / 'crf'


def test_blurred_square_gets_sharper():
    raw, gt, prob = scene(np.random.default_rng(1))
    before = _dice(prob >= 0.5, gt)
    assert before < 0.95
    assert _dice(dense_crf(raw, prob, CRFParams()), gt) > before


def test_outside_foreground_stays_zero():
    raw, _, _ = scene(np.random.default_rng(2))
    mask = dense_crf(raw, np.full((SIZE, SIZE), 0.9), CRFParams(alpha=4))
    assert not mask[~foreground_mask(raw)].any() and mask[foreground_mask(raw)].all()


# A CRF of the kind val chose for an earlier weights/ISIC.pt (colour model, CRF, post-processing, at 256 px).
RELEASED_CRF = CRFParams(alpha=2, sxy=20, srgb=10, bi_compat=10, n_iter=10, colour=2, postprocess='central+fill')


def _photograph(height, width, pores=0.0):
    """(uint8 image, bool lesion, calibrated map) of a dermoscopy-like photograph of any size: noisy skin
    with dark 2 x 2 px pores (about a fraction ``pores`` of the 2 x 2 blocks), a dark elliptic lesion
    left of the centre, and a smooth map whose 0.5 level finds only the lesion's core."""
    rows, cols = np.mgrid[:height, :width]
    radius = ((rows - 0.5 * height) / (0.25 * height)) ** 2 + ((cols - 0.3 * width) / (0.15 * width)) ** 2
    gt = radius <= 1
    rng = np.random.default_rng(0)
    dark = np.kron(rng.random((height, width)) < pores, np.ones((2, 2), bool))[:height, :width] | gt
    raw = np.where(dark[..., None], (110.0, 70.0, 50.0), (210.0, 165.0, 145.0)) + rng.normal(0, 8, (height, width, 3))
    return raw.clip(0, 255).astype(np.uint8), gt, np.clip(1 - radius, 0, 1).astype(np.float32)


def test_an_image_many_times_the_training_size_is_refined_at_the_parameters_scale(tmp_path):
    # 1536 x 1024 is 6 x 4 times a 256-px val image. Refined at that size, the colour model took the
    # pores for lesion, the CRF kept them as specks and `central` kept the speck nearest the centre: DI 0.
    raw, gt, prob = _photograph(1024, 1536, pores=0.002)
    assert _dice(prob >= 0.5, gt) < 0.7
    mask = dense_crf(raw, prob, RELEASED_CRF)
    assert mask.shape == gt.shape and _dice(mask, gt) > 0.95
    # The same scene at the parameters' scale, where a pore is a fraction of a pixel.
    small_raw, small_gt, small_prob = _photograph(171, 256)
    small = dense_crf(small_raw, small_prob, RELEASED_CRF)
    assert _dice(small, small_gt) > 0.95 and _dice(mask, resize_mask(small, gt.shape)) > 0.98
    # crf.py's path: the image and its 16-bit map read from files by the workers.
    png(tmp_path / 'photo.png', raw)
    png(tmp_path / 'prob.png', np.round(prob * 65535).astype(np.uint16))
    [from_files] = refine_many([(tmp_path / 'photo.png', tmp_path / 'prob.png')], RELEASED_CRF)
    assert _dice(from_files, mask) > 0.999


def test_parse_crf_params_and_grid():
    params = parse_crf_params('alpha=2, sxy=30,n_iter=5')
    assert params == CRFParams(alpha=2.0, sxy=30.0, n_iter=5) and isinstance(params.n_iter, int)
    assert CRFParams.from_dict(params.as_dict()) == params
    with pytest.raises(ValueError, match="unknown CRF parameter 'sigma'"):
        parse_crf_params('sigma=3')
    with pytest.raises(ValueError, match='key=value'):
        parse_crf_params('alpha')
    with pytest.raises(ValueError, match='n_iter'):
        parse_crf_params('n_iter=0')
    with pytest.raises(ValueError, match='postprocess must be one of'):
        parse_crf_params('postprocess=biggest')
    assert parse_crf_params('colour=2,postprocess=central+fill') == CRFParams(colour=2.0, postprocess='central+fill')
    grid = param_grid()
    assert len(set(grid)) == len(grid)
    assert {c.colour for c in grid} == set(COLOUR_WEIGHTS) and {c.postprocess for c in grid} == {'none'}
    with_post = param_grid('central+fill')
    assert len(with_post) == 2 * len(grid) and {c.postprocess for c in with_post} == {'none', 'central+fill'}
    assert with_post[0] == CRFParams(alpha=1, sxy=20, srgb=10, bi_compat=3, n_iter=5)  # mildest first


def test_grid_has_the_readmes_size_and_crf_runs_per_image(tmp_path, monkeypatch):
    """README: 288 settings and 72 CRF runs per image for a rule with post-processing (ISIC's)."""
    with open(os.path.join(REPO_ROOT, 'README.md'), encoding='utf-8') as handle:
        assert '288 settings, 72 CRF runs per image' in ' '.join(handle.read().split())
    grid = param_grid('central+fill')
    root, test_root = make_tested_run(tmp_path, n_images=1)
    runs = []
    real_crf = crf_utils.dcrf.DenseCRF2D
    monkeypatch.setattr(crf_utils.dcrf, 'DenseCRF2D', lambda *args: runs.append(args) or real_crf(*args))
    val = root / 'data' / 'ds' / 'f1' / 'val'
    search_params([(str(val / 'images' / 'val_0.png'), str(test_root / 'val' / 'prob' / 'val_0.png'),
                    str(val / 'labels' / 'val_0_segmentation.png'), False)], grid)
    assert (len(grid), len(runs)) == (288, 72)


def test_postprocess_cleans_the_crf_mask():
    raw, gt, prob = scene(np.random.default_rng(3))
    speck = (slice(SIZE - BORDER - 4, SIZE - BORDER - 1), slice(SIZE - BORDER - 4, SIZE - BORDER - 1))
    raw[speck], prob[speck] = 190, 0.95  # a bright blob far from the lesion that the CRF keeps
    plain = dense_crf(raw, prob, CRFParams())
    assert plain[speck].all()
    cleaned = dense_crf(raw, prob, CRFParams(postprocess='largest'))
    np.testing.assert_array_equal(cleaned, largest_component(plain))
    assert not cleaned[speck].any() and cleaned[gt].mean() > 0.9


def test_search_matches_single_crf_runs_and_pool_matches_single_process(tmp_path):
    root, test_root = make_tested_run(tmp_path)
    images = sorted((root / 'data' / 'ds' / 'f1' / 'val' / 'images').iterdir())
    items = [(str(p), str(test_root / 'val' / 'prob' / p.name),
              str(p.parent.parent / 'labels' / f'{p.stem}_segmentation.png'), False) for p in images]
    grid = param_grid('largest')
    # Both ends and the middle of the grid: every colour weight, both post-processings, shared CRF runs.
    combos = grid[:4] + grid[len(grid) // 2:len(grid) // 2 + 4] + grid[-4:]
    assert len({(c.colour, c.postprocess) for c in combos}) >= 4
    best, means, at_most, before = search_params(items, combos, num_workers=1)
    singles = np.mean([[_dice(dense_crf(np.asarray(Image.open(i).convert('RGB')), read_prob(p), c),
                               np.asarray(Image.open(lab)) > 0) for i, p, lab, _ in items] for c in combos], axis=1)
    scored = ~np.isnan(means)  # the others were dropped once they could no longer win
    np.testing.assert_allclose(means[scored], singles[scored])
    assert np.all(at_most[~scored] >= singles[~scored] - 1e-12) and np.isnan(at_most[scored]).all()
    assert best == int(np.argmax(singles)) and 0 <= before <= 1
    pooled = search_params(items, combos, num_workers=2)
    assert pooled.best == best and np.array_equal(pooled.means[scored & ~np.isnan(pooled.means)],
                                                  means[scored & ~np.isnan(pooled.means)])
    pairs = [(i, p) for i, p, _, _ in items] * 2
    one = refine_many(pairs, CRFParams(), num_workers=1)
    two = refine_many(pairs, CRFParams(), num_workers=2)
    assert len(one) == len(two) == len(pairs) and all(np.array_equal(a, b) for a, b in zip(one, two))


def test_refine_arrays_in_a_pool_matches_single_runs():
    pairs = [(raw, prob) for raw, _, prob in (scene(np.random.default_rng(seed)) for seed in range(3))]
    singles = [dense_crf(raw, prob, CRFParams()) for raw, prob in pairs]
    assert crf_pool(1) is None
    with crf_pool(2) as pool:
        pooled = refine_arrays(pairs, CRFParams(), pool)
    for masks in (pooled, refine_arrays(pairs, CRFParams())):
        assert len(masks) == 3 and all(np.array_equal(a, b) for a, b in zip(masks, singles))


def test_crf_main_writes_outputs_and_summaries(tmp_path, monkeypatch):
    root, _ = make_tested_run(tmp_path)
    reports = []
    monkeypatch.setattr(crf, 'write_run_report', reports.append)
    summaries = crf.main(crf_argv(root))
    out = _crf_dir(root)
    assert reports == [str(out.parent)]
    summary = json.loads((out / 'testA' / 'summary.json').read_text())
    for key in (*SCORE_NAMES, 'pooled', 'thresholded_JA', 'n_images', 'before', 'selection', 'command',
                'images_per_second'):
        assert key in summary, key
    assert set(summary['before']) == set(SCORE_NAMES) and summary['n_images'] == 3
    assert summary['selection']['chosen_on'] == 'val'
    assert set(summary['selection']) == {'crf', 'chosen_on', 'val_DI_before', 'val_DI_after', 'search_sha256'}
    assert summary['DI'] > summary['before']['DI']
    record = json.loads((out / 'selection.json').read_text())
    assert record['selection'] == summary['selection'] and record['command'] == summary['command']
    test_record = (out.parent / 'test' / 'selection.json').read_bytes()
    assert record['test_record_sha256'] == hashlib.sha256(test_record).hexdigest()
    grid = json.loads((out / 'val_grid.json').read_text())
    assert CRFParams.from_dict({k: grid['grid'][grid['chosen']][k] for k in summary['selection']['crf']}) \
        == CRFParams.from_dict(summary['selection']['crf'])
    test_b = summaries['testB']
    assert {'fp_rate', 'mean_area'} <= set(test_b) and set(test_b['before']) == {'fp_rate', 'mean_area'}
    for split in ('testA', 'testB'):
        with open(out / split / 'metrics.csv', newline='') as f:
            rows = list(csv.DictReader(f))
        assert tuple(rows[0]) == SURFACE_COLUMNS and len(rows) == 3
        for name in (r['name'] for r in rows):
            mask = np.asarray(Image.open(out / split / 'masks' / f'{name}.png'))
            assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
            assert not mask[:BORDER].any() and not mask[:, -BORDER:].any()
            assert np.asarray(Image.open(out / split / 'overlays' / f'{name}.png')).shape == (SIZE, SIZE, 3)


def test_testB_figures_are_those_of_the_written_masks(tmp_path):
    root, test_root = make_tested_run(tmp_path, false_alarms=1)
    crf.main(crf_argv(root, '--crf_params', 'alpha=2,n_iter=5', '--splits', 'testB'))
    summary = json.loads((_crf_dir(root) / 'testB' / 'summary.json').read_text())
    for figures, folder in ((summary, _crf_dir(root) / 'testB'), (summary['before'], test_root / 'testB')):
        masks = [read_mask(path) for path in sorted((folder / 'masks').glob('*.png'))]
        assert len(masks) == 3 and sum(mask.any() for mask in masks) == 1  # the one false alarm
        assert figures['fp_rate'] == pytest.approx(1 / 3)
        assert figures['mean_area'] == pytest.approx(np.mean([mask.mean() for mask in masks]))
        assert 0 < figures['mean_area'] < 0.1


def test_selection_reads_only_val_labels(tmp_path):
    root, _ = make_tested_run(tmp_path)
    first = crf.main(crf_argv(root))['testA']['selection']
    for label in (root / 'data' / 'ds' / 'f1' / 'testA' / 'labels').iterdir():
        png(label, np.zeros((SIZE, SIZE), np.uint8))
    second = crf.main(crf_argv(root))['testA']
    assert second['selection'] == first
    assert second['SE'] == 1.0  # the empty testA labels were used for scoring only


def test_crf_params_skip_the_search(tmp_path, monkeypatch):
    root, _ = make_tested_run(tmp_path)
    monkeypatch.setattr(crf, 'param_grid', lambda *_: pytest.fail('the grid must not be searched'))
    summary = crf.main(crf_argv(root, '--crf_params', 'alpha=2,n_iter=5', '--splits', 'testA'))['testA']
    assert summary['selection']['chosen_on'] == 'given'
    assert summary['selection']['crf'] == CRFParams(alpha=2, n_iter=5).as_dict()
    assert summary['selection']['val_DI_after'] is not None
    assert not (_crf_dir(root) / 'val_grid.json').exists() and not (_crf_dir(root) / 'testB').exists()


def test_stored_params_without_val(tmp_path):
    root, test_root = make_tested_run(tmp_path, splits=('testA',))
    with pytest.raises(SystemExit, match='--crf_params'):
        crf.main(crf_argv(root, '--splits', 'testA'))
    record_path = test_root / 'selection.json'  # test.py records the CRF stored with --weights
    stored = json.loads(record_path.read_text())
    stored['selection']['crf'] = CRFParams(sxy=20, srgb=10).as_dict()
    record_path.write_text(json.dumps(stored))
    summary = crf.main(crf_argv(root, '--splits', 'testA'))['testA']
    assert summary['selection']['chosen_on'] == 'stored'
    assert summary['selection']['crf'] == stored['selection']['crf']


def test_missing_test_output_gives_one_line_error(tmp_path, capsys):
    root, _ = make_tested_run(tmp_path, splits=('val', 'testA'))
    with pytest.raises(SystemExit) as info:
        crf.main(crf_argv(root))
    message = str(info.value.code)
    assert message.startswith('error: ') and '\n' not in message
    assert 'testB' in message and 'run test.py first' in message and '--name run' in message
    assert capsys.readouterr().out == ''


@pytest.mark.parametrize('console', [Terminal, io.StringIO], ids=['terminal', 'log file'])
def test_console_tables_have_lines_of_their_own_and_the_report_is_named(tmp_path, monkeypatch, console):
    root, _ = make_tested_run(tmp_path)
    output = console()
    monkeypatch.setattr(sys, 'stdout', output)
    monkeypatch.setattr(sys, 'stderr', output)
    crf.main(crf_argv(root, '--crf_params', 'alpha=2,n_iter=5'))
    text = output.getvalue()
    assert ('\r' in text) == (console is Terminal)  # progress bars on a terminal only
    shown = [line.rsplit('\r', 1)[-1] for line in text.split('\n')]  # what a terminal shows of each line
    header = shown.index(f'{"split":<7}{"":<8}{"n":>5}  ' + ' '.join(f'{k:>7}' for k in SCORE_NAMES))
    # val first (issue 42: it was left out), then the --splits asked for.
    assert [line[:15] for line in shown[header + 1:header + 7]] == [
        'val    before  ', 'val    after   ', 'testA  before  ', 'testA  after   ', 'testB  before  ',
        'testB  after   ']
    report = tmp_path / 'results' / 'ds' / 'f1' / 'run' / 'index.html'
    assert shown[-2:] == [f'report updated with the CRF results: {report}', '']
    assert report.is_file()


def test_val_after_the_crf_covers_the_few_shot_images_test_py_chose_on(tmp_path):
    """With a held-out few-shot folder in test.py's decision, val's figures after the CRF are over val plus
    those images, as test.py's figures before are (one set of images on both sides of the comparison)."""
    root, test_root = make_tested_run(tmp_path, n_images=2)
    rng = np.random.default_rng(7)
    few = root / 'data' / 'ds' / 'f1' / 'few_sample' / 'held'
    for index in range(2):
        raw, gt, prob = scene(rng)
        png(few / 'A' / f'few_{index}.png', raw)
        png(few / 'B' / f'few_{index}_segmentation.png', gt.astype(np.uint8) * 255)
        png(test_root / 'val' / 'prob' / f'few_{index}.png', np.round(prob * 65535).astype(np.uint16))
    (test_root / 'selection.json').write_text(json.dumps({'selection': dict(TEST_RULE, select_few='held'),
                                                          'command': 'test.py'}))
    summary = crf.main(crf_argv(root, '--crf_params', 'alpha=2,n_iter=5', '--splits', 'val'))['val']
    assert summary['n_images'] == 4
    with open(_crf_dir(root) / 'val' / 'metrics.csv', newline='') as handle:
        names = sorted(row['name'] for row in csv.DictReader(handle))
    assert names == ['few_0', 'few_1', 'val_0', 'val_1']


def test_an_image_the_gate_emptied_stays_empty_and_scores_so_in_the_search(tmp_path):
    """test.py's gate emptied testB_0, a normal image with a lesion-like patch: its map is held below 0.5
    there (as util/selection.apply_rule leaves it), from which the CRF would grow the lesion back."""
    root, test_root = make_tested_run(tmp_path, splits=('testB',), false_alarms=1)
    prob_path = test_root / 'testB' / 'prob' / 'testB_0.png'
    png(prob_path, np.round(np.minimum(read_prob(str(prob_path)), 0.49) * 65535).astype(np.uint16))
    png(test_root / 'testB' / 'masks' / 'testB_0.png', np.zeros((SIZE, SIZE), np.uint8))
    image = str(root / 'data' / 'ds' / 'f1' / 'testB' / 'testB_0.png')
    params = CRFParams(alpha=2, n_iter=5)
    # Scored against an empty label (a normal image): the CRF's lesion scores 0, the gate's empty mask 1.
    assert [search_params([(image, str(prob_path), None, gated)], [params]).means[0]
            for gated in (False, True)] == [0, 1]
    argv = crf_argv(root, '--crf_params', 'alpha=2,n_iter=5', '--splits', 'testB')
    assert crf.main(argv)['testB']['fp_rate'] == pytest.approx(1 / 3)
    (test_root / 'testB' / 'summary.json').write_text(json.dumps({'gated': ['testB_0']}))
    assert crf.main(argv)['testB']['fp_rate'] == 0
    assert not read_mask(str(_crf_dir(root) / 'testB' / 'masks' / 'testB_0.png')).any()


def _full_grid(items, combos):
    """The search without pruning, as crf.py ran it before: every combo on every image, means over images."""
    results = [crf_utils._score_task((*item, combos)) for item in items]
    return np.mean(np.array([after for _, after in results], dtype=np.float64), axis=0)


@pytest.mark.slow
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_the_pruned_search_chooses_the_full_grids_argmax_with_fewer_crf_runs(tmp_path, seed, monkeypatch):
    """issue 42 item 4: the search is cheaper with the same choice. A combo is dropped only when even DI 1 on
    every image left could not lift its mean to the leader's; the rest are scored everywhere."""
    root, test_root = make_tested_run(tmp_path, n_images=10, seed=seed, splits=('val',))
    images = sorted((root / 'data' / 'ds' / 'f1' / 'val' / 'images').iterdir())
    items = [(str(p), str(test_root / 'val' / 'prob' / p.name),
              str(p.parent.parent / 'labels' / f'{p.stem}_segmentation.png'), False) for p in images]
    # Noisier maps on some images, so that the combos' means spread out.
    for index in range(0, 10, 3):
        prob = read_prob(items[index][1])
        noisy = np.clip(prob + np.random.default_rng(index).normal(0, 0.3, prob.shape), 0, 1)
        png(Path(items[index][1]), np.round(noisy * 65535).astype(np.uint16))
    combos = param_grid('largest')
    full = _full_grid(items, combos)
    runs = []
    real_crf = crf_utils.dcrf.DenseCRF2D
    monkeypatch.setattr(crf_utils.dcrf, 'DenseCRF2D', lambda *args: runs.append(args) or real_crf(*args))
    found = search_params(items, combos, num_workers=1)
    assert found.best == int(np.argmax(full))
    scored = ~np.isnan(found.means)
    assert np.array_equal(found.means[scored], full[scored])  # bit for bit
    assert np.all(found.at_most[~scored] >= full[~scored]) and np.all(found.at_most[~scored] < full[found.best])
    assert (~scored).any() and len(runs) < 72 * len(items)


def test_a_search_of_the_same_inputs_is_reused_and_a_changed_map_is_searched_again(tmp_path, monkeypatch, capsys):
    """crf.py stores its search with the digest of its inputs; a later crf.py on the same maps, images, labels
    and grid (this run again, or another run of the data folder with the same test.py maps, as release_crf
    after r1_crf) reuses its choice instead of searching again."""
    root, test_root = make_tested_run(tmp_path, splits=('val', 'testA'))
    first = crf.main(crf_argv(root, '--splits', 'testA'))['testA']['selection']
    assert 'CRF search: ' in capsys.readouterr().out and len(first['search_sha256']) == 64
    monkeypatch.setattr(crf, 'search_params', lambda *args: pytest.fail('searched again'))
    assert crf.main(crf_argv(root, '--splits', 'testA'))['testA']['selection'] == first
    assert 'reusing its choice' in capsys.readouterr().out
    other = test_root.parent.parent / 'other'
    shutil.copytree(test_root, other / 'test')
    argv = crf_argv(root, '--splits', 'testA')
    argv[argv.index('run')] = 'other'
    assert crf.main(argv)['testA']['selection'] == first
    assert str(_crf_dir(root) / 'val_grid.json') in capsys.readouterr().out
    prob = other / 'test' / 'val' / 'prob' / 'val_0.png'
    png(prob, np.round(read_prob(str(prob)) * 0.9 * 65535).astype(np.uint16))
    with pytest.raises(pytest.fail.Exception, match='searched again'):
        crf.main(argv)
