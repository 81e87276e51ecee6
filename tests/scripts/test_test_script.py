"""End-to-end tests of test.py on tiny trained runs: outputs, the val-selection cache, checkpoint choice,
selection blind to testA labels, and error messages."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import crf
from models import find_model_class, weights_file
import train
from conftest import TINY_DATASET, TINY_FOLDER, test_script
from data.image_io import list_images, read_mask
from refinement.crf_utils import CRFParams
from evaluation.metrics import SCORE_NAMES, SURFACE_COLUMNS, SegmentationScores

SPLITS = ('val', 'testA', 'testB')
# Evaluation images are resized to this (W, H), unlike the 32 px network input, so "original size" shows.
EVAL_SIZE = (44, 36)
RULE_KEYS = ('checkpoint', 'step', 'map_mode', 'binarize', 'threshold', 'postprocess', 'val_DI')


def _split_images(data_dir, split):
    return list_images(os.path.join(data_dir, split, 'images' if split != 'testB' else ''))


@pytest.fixture(scope='module')
def eval_dataroot(tiny_dataroot, tmp_path_factory):
    """A copy of the tiny dataroot whose val/testA/testB images and labels are EVAL_SIZE (W x H)."""
    root = tmp_path_factory.mktemp('eval_dataroot')
    shutil.copytree(os.path.join(tiny_dataroot, TINY_DATASET), root / TINY_DATASET)
    data_dir = root / TINY_DATASET / TINY_FOLDER
    for split in SPLITS:
        for path in _split_images(data_dir, split):
            with Image.open(path) as img:
                img.resize(EVAL_SIZE, Image.BILINEAR).save(path)
        if split != 'testB':
            for path in list_images(data_dir / split / 'labels'):
                with Image.open(path) as img:
                    img.resize(EVAL_SIZE, Image.NEAREST).save(path)
    return str(root)


@pytest.fixture
def trained(tiny_argv, eval_dataroot, run_folder):
    """A tiny run trained 4 steps on ``eval_dataroot`` with checkpoints at steps 2 and 4; returns its folder."""
    assert train.main(tiny_argv('--dataroot', eval_dataroot, '--iteration', 4, '--save_freq', 2)) == 0
    return run_folder()


@pytest.fixture
def run_test(tiny_test_argv, eval_dataroot):
    """Factory ``run_test(*extra, name='run')``: test.main on ``eval_dataroot`` with the tiny base flags."""
    def run(*extra, name='run'):
        return test_script.main(tiny_test_argv('--dataroot', eval_dataroot, *extra, name=name))
    return run


def _summary(folder, split):
    with open(os.path.join(folder, 'test', split, 'summary.json')) as handle:
        return json.load(handle)


def _rows(folder, split):
    with open(os.path.join(folder, 'test', split, 'metrics.csv'), newline='') as handle:
        return list(csv.reader(handle))


def _png(path):
    with Image.open(path) as img:
        return img.mode, img.size, np.asarray(img)


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def _label_of(data_dir, split, name):
    return os.path.join(data_dir, split, 'labels', name + '_segmentation.png')


@pytest.mark.slow
def test_writes_every_output(trained, run_test, eval_dataroot, capsys):
    run_test('--num_workers', 0)
    out = capsys.readouterr().out
    folder, data_dir = trained, os.path.join(eval_dataroot, TINY_DATASET, TINY_FOLDER)
    with open(os.path.join(folder, 'test', 'selection.json')) as handle:
        cached = json.load(handle)
    rule = cached['selection']
    for key in RULE_KEYS:
        assert key in rule, key
    assert rule['checkpoint'] in [os.path.join(folder, 'checkpoints', f'iter_{s:07d}.pt') for s in (2, 4)]

    for split in SPLITS:
        names = [_stem(p) for p in _split_images(data_dir, split)]
        split_dir = os.path.join(folder, 'test', split)
        for sub in ('prob', 'masks', 'overlays', 'translation', 'cam'):
            assert sorted(os.listdir(os.path.join(split_dir, sub))) == [n + '.png' for n in names], (split, sub)
        scores = SegmentationScores()
        for name in names:
            mode, size, prob = _png(os.path.join(split_dir, 'prob', name + '.png'))
            assert mode == 'I;16' and prob.dtype == np.uint16 and size == EVAL_SIZE
            mode, size, mask = _png(os.path.join(split_dir, 'masks', name + '.png'))
            assert mode == 'L' and size == EVAL_SIZE and set(np.unique(mask)) <= {0, 255}
            # The saved (calibrated) map and the mask agree: p >= 0.5 is the decision (crf.py relies on it).
            assert np.array_equal(prob / 65535.0 >= 0.5, mask == 255), (split, name)
            mode, size, _ = _png(os.path.join(split_dir, 'overlays', name + '.png'))
            assert mode == 'RGB' and size == EVAL_SIZE
            assert _png(os.path.join(split_dir, 'translation', name + '.png'))[1] == (32, 32)
            if split != 'testB':
                scores.add(name, mask == 255, read_mask(_label_of(data_dir, split, name)))

        summary = _summary(folder, split)
        assert summary['n_images'] == len(names)
        assert summary['selection'] == rule  # every split uses the one val choice
        assert '--dataroot' in summary['command'] and eval_dataroot in summary['command']
        if split == 'testB':
            assert not os.path.exists(os.path.join(split_dir, 'metrics.csv'))
            assert 0 <= summary['fp_rate'] <= 1 and 0 <= summary['mean_area'] <= 1
            continue
        rows = _rows(folder, split)
        assert rows[0] == list(SURFACE_COLUMNS) and [r[0] for r in rows[1:]] == names
        # metrics.csv scores the written masks against the labels, one row per image.
        for row, expected in zip(rows[1:], scores.rows()):
            assert [int(v) for v in row[1:5]] == [expected[k] for k in ('TP', 'FP', 'FN', 'TN')]
            assert [float(v) for v in row[5:10]] == pytest.approx([expected[k] for k in SCORE_NAMES])
        for key in SCORE_NAMES:
            assert 0 <= summary[key] <= 1 and 0 <= summary['pooled'][key] <= 1
            assert summary[key] == pytest.approx(scores.mean()[key])
        assert 0 <= summary['thresholded_JA'] <= 1
    assert _summary(folder, 'val')['DI'] == pytest.approx(rule['val_DI'])  # the val score selection saw
    assert 0 <= _summary(folder, 'testA')['auc'] <= 1 and 'auc' not in _summary(folder, 'val')

    with open(os.path.join(folder, 'index.html'), encoding='utf-8') as handle:
        page = handle.read()
    for split in SPLITS:
        assert f'test/{split}/overlays/{split}_0000.png' in page
    assert 'Choices made on val' in page
    assert 'JA' in out and 'testB' in out and 'images with any lesion' in out  # the printed table


@pytest.mark.slow
def test_second_run_uses_the_record_and_reselect_chooses_again(trained, run_test, monkeypatch, capsys):
    real_select = test_script.select
    run_test()
    first = _summary(trained, 'testA')
    assert 'already recorded' not in capsys.readouterr().out
    with open(os.path.join(trained, 'test', 'selection.json')) as handle:
        record = json.load(handle)
    assert record['selection'] == first['selection'] and record['command'] == first['command']

    def must_not_select(*args, **kwargs):
        raise AssertionError('selection re-run despite the cache')
    monkeypatch.setattr(test_script, 'select', must_not_select)
    run_test()
    assert 'val selection already recorded' in capsys.readouterr().out
    second = _summary(trained, 'testA')
    assert second['selection'] == first['selection'] and second['DI'] == first['DI']

    calls = []
    monkeypatch.setattr(test_script, 'select', lambda *a, **k: calls.append(1) or real_select(*a, **k))
    run_test('--reselect')
    out = capsys.readouterr().out
    assert calls == [1] and 'already recorded' not in out and 'held another decision' not in out
    assert _summary(trained, 'testA')['selection'] == first['selection']  # same data, same choice

    # New code whose model offers other maps (same checkpoints): chosen again, not served the old choice.
    model_class = find_model_class(weights_file.read_state(first['selection']['checkpoint'])['architecture']['model'])
    monkeypatch.setattr(model_class, 'map_modes', model_class.map_modes + ('a-new-map',))
    run_test()
    assert calls == [1, 1] and 'already recorded' not in capsys.readouterr().out


@pytest.mark.slow
def test_which_iter_picks_that_checkpoint(trained, run_test, capsys):
    run_test('--which_iter', 2)
    rule = _summary(trained, 'testA')['selection']
    assert rule['step'] == 2 and rule['checkpoint'] == os.path.join(trained, 'checkpoints', 'iter_0000002.pt')
    assert {entry['step'] for entry in rule['ranking']} == {2}
    run_test('--which_iter', 'latest')
    assert 'cached' not in capsys.readouterr().out  # another checkpoint set: not the cached choice
    assert _summary(trained, 'testA')['selection']['step'] == 4


@pytest.mark.slow
def test_selection_never_reads_testA_labels(trained, run_test, eval_dataroot, tmp_path, monkeypatch):
    run_test()
    clean = _summary(trained, 'testA')

    # The same data with every testA label replaced by an all-lesion mask of the right size.
    corrupt_root = tmp_path / 'corrupt'
    shutil.copytree(os.path.join(eval_dataroot, TINY_DATASET), corrupt_root / TINY_DATASET)
    for path in list_images(corrupt_root / TINY_DATASET / TINY_FOLDER / 'testA' / 'labels'):
        Image.fromarray(np.full(EVAL_SIZE[::-1], 255, np.uint8)).save(path)

    events = []
    check_split, select = test_script.check_split, test_script.select
    monkeypatch.setattr(test_script, 'check_split',
                        lambda folder, split, **k: events.append(('check', split)) or check_split(folder, split, **k))
    monkeypatch.setattr(test_script, 'select', lambda *a, **k: events.append(('select', None)) or select(*a, **k))
    monkeypatch.setattr('data.labeled_dataset.read_mask', lambda path: events.append(('read', path)) or read_mask(path))
    run_test('--reselect', '--dataroot', corrupt_root)
    corrupt = _summary(trained, 'testA')

    assert corrupt['selection'] == clean['selection']  # checkpoint, mode, threshold, post-processing
    assert corrupt['DI'] != clean['DI']  # the corrupt labels were read, to score only
    done = events.index(('select', None))
    testA = [i for i, (kind, what) in enumerate(events)
             if (kind == 'check' and what == 'testA') or (kind == 'read' and os.sep + 'testA' + os.sep in what)]
    assert testA and min(testA) > done, events


def test_no_checkpoint_says_to_train_or_pass_weights(run_test, run_folder):
    with pytest.raises(SystemExit) as info:
        run_test(name='untrained')
    message = str(info.value.code)
    assert 'train' in message and '--weights' in message and 'untrained' in message
    assert not os.path.exists(os.path.join(run_folder('untrained'), 'test'))


def test_unknown_which_iter_lists_the_available_steps(trained, run_test):
    with pytest.raises(SystemExit) as info:
        run_test('--which_iter', 999)
    message = str(info.value.code)
    assert '999' in message and 'available: 2, 4' in message


@pytest.mark.parametrize('content', ['garbage', 'foreign', 'missing'])
def test_weights_that_are_not_a_checkpoint_give_one_line(run_test, tmp_path, content):
    path = tmp_path / 'model.pt'
    if content == 'garbage':
        path.write_bytes(b'\x00not a checkpoint' * 10)
    elif content == 'foreign':
        torch.save({'state_dict': {'w': torch.zeros(2)}}, path)
    with pytest.raises(SystemExit) as info:
        run_test('--weights', path, name='released')
    message = str(info.value.code)
    assert message.startswith('error: ') and '\n' not in message and str(path) in message


@pytest.mark.slow
def test_weights_file_brings_its_own_architecture(trained, run_test, tmp_path, monkeypatch):
    """test.py takes img_size/ch/n_res from the file, whatever the command line says."""
    weights = str(tmp_path / 'released.pt')
    shutil.copy(os.path.join(trained, 'checkpoints', 'iter_0000004.pt'), weights)
    built = []
    create_model = weights_file.create_model
    monkeypatch.setattr(weights_file, 'create_model',
                        lambda opt: built.append((opt.img_size, opt.ch, opt.n_res)) or create_model(opt))
    run_test('--weights', weights, '--img_size', 64, '--ch', 8, '--n_res', 2, name='released')
    assert built and set(built) == {(32, 4, 1)}
    released = os.path.join(os.path.dirname(trained), 'released')
    rule = _summary(released, 'testA')['selection']
    assert rule['checkpoint'] == weights and rule['step'] == 4
    assert _png(os.path.join(released, 'test', 'val', 'translation', 'val_0000.png'))[1] == (32, 32)

    # Same network as the run's own step-4 checkpoint: the same maps.
    run_test('--which_iter', 4, '--map_mode', rule['map_mode'])
    for name in ('val_0000', 'val_0001'):
        ours = _png(os.path.join(trained, 'test', 'val', 'prob', name + '.png'))[2]
        theirs = _png(os.path.join(released, 'test', 'val', 'prob', name + '.png'))[2]
        assert np.array_equal(ours, theirs), name


class _RunsCode:
    """A pickled object whose unpickling would call os.system: what a crafted weights file holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_crafted_weights_file_runs_no_code(trained, run_test, tmp_path):
    """Every file is opened weights_only: a pickle that would run a command is refused before it runs,
    as --weights and as a checkpoint planted in the run's folder."""
    marker = tmp_path / 'code_ran'
    state = torch.load(os.path.join(trained, 'checkpoints', 'iter_0000004.pt'), weights_only=True)
    crafted = tmp_path / 'crafted.pt'
    torch.save(dict(state, payload=_RunsCode(marker)), crafted)
    with pytest.raises(SystemExit) as info:
        run_test('--weights', crafted, name='released')
    assert str(info.value.code) == (f'error: {crafted}: holds more than tensors and plain data (a pickled object '
                                    f'that could run code), so it is not opened; use a file written by train.py '
                                    f'or from weights/')
    shutil.copy(crafted, os.path.join(trained, 'checkpoints', 'iter_0000006.pt'))
    with pytest.raises(SystemExit, match='could run code'):
        run_test()
    assert not marker.exists()


@pytest.mark.parametrize('dataset, allow, outcome', [
    ('BraTS', False, 'refused'), ('BraTS', True, 'note'), ('mine', False, 'note'), (TINY_DATASET, False, 'silent')])
def test_weights_of_another_dataset(trained, tmp_path, capsys, dataset, allow, outcome):
    state = torch.load(os.path.join(trained, 'checkpoints', 'iter_0000004.pt'), weights_only=True)
    state['options']['dataset'] = 'ISIC' if dataset != TINY_DATASET else TINY_DATASET
    if outcome == 'refused':
        with pytest.raises(SystemExit) as info:
            weights_file.check_dataset(state, dataset, 'w.pt', allow)
        assert str(info.value.code) == ('error: w.pt was trained on ISIC, not BraTS; pass the BraTS weights '
                                        '(weights/BraTS.pt), or --allow_other_dataset True to apply it anyway')
        return
    weights_file.check_dataset(state, dataset, 'w.pt', allow)
    out = capsys.readouterr().out
    assert out == ('' if outcome == 'silent' else f'note: w.pt was trained on ISIC; applying it to {dataset}\n')


@pytest.mark.slow
def test_testB_rate_and_testA_auc_are_those_of_the_written_masks_and_the_scores(trained, run_test, monkeypatch):
    """summary.json's testB fp_rate / mean_area against the written masks, and testA's AUC against image
    scores known by hand: they replace the model's on their way to the summary, since a 4-step model
    ranks at chance (AUC 0.5), where swapped labels would give the same value."""
    hand_scores = {'testA': [0.9, 0.6, 0.3], 'testB': [0.5, 0.1]}  # 5 of the 6 (A, B) pairs ranked right
    predict_split = test_script.predict_split

    def with_hand_scores(model, pairs, desc, **kwargs):
        items = predict_split(model, pairs, desc, **kwargs)
        for item, score in zip(items, hand_scores.get(desc, [])):
            item['score'] = score
        return items
    monkeypatch.setattr(test_script, 'predict_split', with_hand_scores)
    run_test()

    masks = [read_mask(path) for path in list_images(os.path.join(trained, 'test', 'testB', 'masks'))]
    testB = _summary(trained, 'testB')
    assert len(masks) == testB['n_images'] == 2
    assert testB['fp_rate'] == np.mean([mask.any() for mask in masks])
    assert testB['mean_area'] == pytest.approx(np.mean([mask.mean() for mask in masks]))
    assert testB['fp_rate'] != pytest.approx(testB['mean_area'])  # the data tells the two apart
    assert _summary(trained, 'testA')['auc'] == pytest.approx(5 / 6)


@pytest.mark.slow
def test_a_file_holding_choices_is_served_with_them_and_rechosen_on_val_when_asked(trained, run_test, tmp_path,
                                                                                   tiny_test_argv, eval_dataroot):
    """issue 42: test.py --weights FILE with a val split applied a new val choice where the file stores its
    own (predict.py applies the stored one). A file's stored choices now serve, the record naming the file;
    --rechoose True chooses on val; crf.py follows test.py's record."""
    state = torch.load(os.path.join(trained, 'checkpoints', 'iter_0000004.pt'), weights_only=True)
    stored = {'map_mode': 'attention', 'binarize': 'fixed', 'threshold': 0.123, 'postprocess': 'none',
              'step': 4, 'checkpoint': 'iter_0000004.pt', 'chosen_on': 'val + few_sample/x', 'val_DI': 0.5,
              'crf': CRFParams(alpha=2, n_iter=5).as_dict()}
    weights = str(tmp_path / 'holds_choices.pt')
    torch.save(dict(state, selection=stored), weights)
    run_test('--weights', weights, '--splits', 'testA', name='served')
    served = os.path.join(os.path.dirname(trained), 'served')
    rule = json.load(open(os.path.join(served, 'test', 'selection.json')))['selection']
    assert rule['chosen_on'] == 'stored' and rule['stored_in'] == weights and 'ranking' not in rule
    assert {k: rule[k] for k in ('map_mode', 'threshold', 'postprocess', 'crf')} == \
        {k: stored[k] for k in ('map_mode', 'threshold', 'postprocess', 'crf')}
    assert rule['stored'] == {'chosen_on': 'val + few_sample/x', 'val_DI': 0.5}
    assert _summary(served, 'val')['selection'] == rule and _summary(served, 'val')['n_images'] == 3
    argv = tiny_test_argv('--dataroot', eval_dataroot, '--splits', 'testA', '--num_workers', 1, name='served')
    assert crf.main(argv)['testA']['selection']['crf'] == stored['crf']
    searched = crf.main(argv + ['--rechoose', 'True'])['val']['selection']
    assert searched['chosen_on'] == 'val' and searched['val_DI_after'] is not None

    run_test('--weights', weights, '--splits', 'testA', '--rechoose', 'True', name='served')
    rule = json.load(open(os.path.join(served, 'test', 'selection.json')))['selection']
    assert rule['chosen_on'] == 'val' and 'stored_in' not in rule and rule['ranking']
    # A training checkpoint given as --weights stores no choices: chosen on val without the flag.
    run_test('--weights', os.path.join(trained, 'checkpoints', 'iter_0000004.pt'), '--splits', 'testA', name='ckpt')
    rule = json.load(open(os.path.join(os.path.dirname(trained), 'ckpt', 'test', 'selection.json')))['selection']
    assert rule['chosen_on'] == 'val' and rule['ranking']
