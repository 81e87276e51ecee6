"""The image-level gate chosen on normal images held out of stage-2 training: the search on hand-made
scores (evaluation/gate.py), then train.py --hold_out_normals -> test.py -> crf.py -> pseudo.py -> export ->
predict.py on tiny phantoms, for a stage-2 run and for the two-stage file."""
import csv
import json
import os

import numpy as np
import pytest
import torch

import crf
import predict
import pseudo
import train
from conftest import TINY_DATASET, TINY_FLAGS, TINY_FOLDER, test_script, usage_error
from data.image_io import list_images, read_mask
from data.layout import check_split
from models.weights_file import load_model
from options.base_options import loader_args
from options.test_options import TestOptions
from tools import export_weights
from refinement.crf_utils import read_prob
from evaluation.gate import choose_gate
from evaluation.inference import predict_split
from evaluation.selection import apply_rule

RULE = {'map_mode': 'seg', 'binarize': 'fixed', 'threshold': 0.5, 'postprocess': 'none'}
FAST_PREDICT = ['--device', 'cpu', '--num_threads', '1', '--num_workers', '0', '--amp', 'off', '--crf', 'False']


def _item(name, score, lesion_in_map, lesion_in_label):
    """A 4 x 4 selection-set item whose map marks the top-left 2 x 2 when ``lesion_in_map`` and whose label
    is that square or empty (a held-out normal image)."""
    square = np.zeros((4, 4), bool)
    square[:2, :2] = True
    prob = np.where(square & lesion_in_map, 0.9, 0.1).astype(np.float32)
    return {'name': name, 'maps': {'seg': prob}, 'score': score, 'gt': square & lesion_in_label,
            'normal': not lesion_in_label}


def test_a_gate_that_empties_the_false_lesions_of_the_normals_is_chosen():
    items = [_item('a1', 0.9, True, True), _item('a2', 0.8, True, True),
             _item('n1', 0.1, True, False), _item('n2', 0.2, True, False)]
    gate, figures = choose_gate(RULE, items)
    # Candidates at the 2 %, 4 %, ... quantiles: the first above both normals' scores is the 34 % one.
    assert gate == {'threshold': pytest.approx(0.2 + 0.02 * 0.6)}
    assert figures == {'held_out_normals': 2, 'lesion_images': 2, 'DI_without_gate': 0.5, 'DI_with_gate': 1.0,
                       'normals_with_lesion_without_gate': 1.0, 'normals_with_lesion_with_gate': 0.0,
                       'lesion_images_gated': 0}


@pytest.mark.parametrize('items', [
    # The normals' masks are empty already: no gate can raise the mean, and a tie keeps none.
    [_item('a1', 0.9, True, True), _item('n1', 0.1, False, False)],
    # Emptying the normal costs a lesion image scored below it as much as it gains.
    [_item('a1', 0.3, True, True), _item('a2', 0.9, True, True), _item('n1', 0.5, True, False)],
])
def test_no_gate_when_it_does_not_raise_the_mean(items):
    gate, figures = choose_gate(RULE, items)
    assert gate is None and figures['DI_with_gate'] is None and figures['lesion_images_gated'] == 0
    assert figures['normals_with_lesion_with_gate'] == figures['normals_with_lesion_without_gate']


def test_hold_out_normals_needs_stage_2_and_a_count(tiny_argv, capsys):
    assert '--hold_out_normals holds normal images out of stage-2 training; it needs --stage 2' in \
        usage_error(capsys, train.main, tiny_argv('--hold_out_normals', 2))
    assert '--hold_out_normals is a number of normal images, got -1' in \
        usage_error(capsys, train.main, tiny_argv('--stage', 2, '--hold_out_normals', -1))


@pytest.fixture(scope='module')
def runs(tiny_dataroot, tmp_path_factory):
    """Factory ``runs.argv(*extra, name)`` of a module's tiny runs, and a stage-1 run 's1' with its test.py,
    crf.py and pseudo.py outputs."""
    results = str(tmp_path_factory.mktemp('results'))

    class Runs:
        @staticmethod
        def argv(*extra, name):
            return ['--dataroot', tiny_dataroot, '--dataset', TINY_DATASET, '--folder', TINY_FOLDER,
                    '--result_dir', results, '--name', name, *TINY_FLAGS, *map(str, extra)]

        @staticmethod
        def folder(name):
            return os.path.join(results, TINY_DATASET, TINY_FOLDER, name)

    assert train.main(Runs.argv(name='s1')) == 0
    test_script.main(Runs.argv('--splits', 'testA', name='s1'))
    crf.main(Runs.argv('--splits', 'testA', '--crf_params', 'alpha=2,n_iter=3', name='s1'))
    pseudo.main(Runs.argv('--crf_workers', 1, name='s1'))
    Runs.data_dir = os.path.join(tiny_dataroot, TINY_DATASET, TINY_FOLDER)
    Runs.normals = list_images(os.path.join(Runs.data_dir, '6_B_weak'))
    return Runs


@pytest.fixture(scope='module')
def held_out(runs):
    """Stage 2 trained with --hold_out_normals 2 ('s2') and tested; returns the normal images it trained on."""
    trained_on = []
    real_items = train.pseudo_items

    def recording_items(pseudo_dir, paths, domain):
        if domain == 'B':
            trained_on.extend(paths)
        return real_items(pseudo_dir, paths, domain)
    train.pseudo_items = recording_items
    try:
        assert train.main(runs.argv('--stage', 2, '--pseudo', 's1', '--hold_out_normals', 2, name='s2')) == 0
    finally:
        train.pseudo_items = real_items
    test_script.main(runs.argv('--splits', 'testA,testB', name='s2'))
    return trained_on


def _json(path):
    with open(path) as handle:
        return json.load(handle)


def _rule(runs, name):
    return _json(os.path.join(runs.folder(name), 'test', 'selection.json'))['selection']


@pytest.mark.slow
def test_held_out_normals_are_not_trained_on_and_choose_a_gate_test_py_applies(runs, held_out):
    assert held_out == runs.normals[:4]
    assert torch.load(os.path.join(runs.folder('s2'), 'checkpoints', 'iter_0000004.pt'),
                      weights_only=True)['options']['hold_out_normals'] == 2
    rule = _rule(runs, 's2')
    assert rule['hold_out_normals'] == 2 and rule['chosen_on'] == 'val + 2 normal images held out of B_weak'
    figures = rule['gate_choice']
    assert (figures['held_out_normals'], figures['lesion_images']) == (2, 3)
    # The seeded tiny run: its untrained U-Net marks both normals, and a gate pays.
    assert rule['gate'] is not None and figures['DI_with_gate'] > figures['DI_without_gate']
    val = _json(os.path.join(runs.folder('s2'), 'test', 'val', 'summary.json'))
    assert val['n_images'] == 5 and val['DI'] == pytest.approx(figures['DI_with_gate'])
    held = {os.path.splitext(os.path.basename(path))[0] for path in runs.normals[4:]}
    val_masks = os.listdir(os.path.join(runs.folder('s2'), 'test', 'val', 'masks'))
    assert held <= {os.path.splitext(name)[0] for name in val_masks}
    with open(os.path.join(runs.folder('s2'), 'index.html')) as handle:
        assert 'image-level gate' in handle.read()

    opt = TestOptions().parse(runs.argv(name='s2'))
    model = load_model(opt, rule['checkpoint'])
    ungated = {key: value for key, value in rule.items() if key != 'gate'}
    gated = []
    for split, pairs in (('testA', check_split(runs.data_dir, 'testA')),
                         ('testB', check_split(runs.data_dir, 'testB', need_labels=False))):
        summary = _json(os.path.join(runs.folder('s2'), 'test', split, 'summary.json'))
        for item in predict_split(model, list(pairs), split, **loader_args(opt)):
            out = os.path.join(runs.folder('s2'), 'test', split)
            mask, prob = read_mask(os.path.join(out, 'masks', item['name'] + '.png')), read_prob(
                os.path.join(out, 'prob', item['name'] + '.png'))
            if item['score'] < rule['gate']['threshold']:
                gated.append(item['name'])
                assert not mask.any() and prob.max() < 0.5 and item['name'] in summary['gated']
            else:
                np.testing.assert_array_equal(mask, apply_rule(ungated, item['maps']['seg'])[0])
                assert item['name'] not in summary['gated']
    assert gated  # the gate emptied some test image


@pytest.mark.slow
def test_crf_chooses_on_the_same_set_and_keeps_gated_images_empty(runs, held_out):
    summaries = crf.main(runs.argv('--splits', 'val,testA,testB', '--num_workers', 1, name='s2'))
    record = _json(os.path.join(runs.folder('s2'), 'crf', 'selection.json'))['selection']
    assert record['chosen_on'] == 'val + 2 normal images held out of B_weak'
    assert record['normals'].startswith('2 normal images held out of B_weak') and 'kept empty' in record['gated_images']
    assert record['val_DI_after'] == pytest.approx(summaries['val']['DI']) and summaries['val']['n_images'] == 5
    for split in ('val', 'testA', 'testB'):
        gated = _json(os.path.join(runs.folder('s2'), 'test', split, 'summary.json'))['gated']
        for name in gated:
            assert not read_mask(os.path.join(runs.folder('s2'), 'crf', split, 'masks', name + '.png')).any()
    with open(os.path.join(runs.folder('s2'), 'crf', 'val', 'metrics.csv'), newline='') as handle:
        rows = {row['name']: row for row in csv.DictReader(handle)}
    for path in runs.normals[4:]:  # scored against an empty label: 1 when empty, 0 otherwise
        name = os.path.splitext(os.path.basename(path))[0]
        marked = read_mask(os.path.join(runs.folder('s2'), 'crf', 'val', 'masks', name + '.png')).any()
        assert float(rows[name]['DI']) == (0.0 if marked else 1.0)


@pytest.mark.slow
def test_the_gate_travels_to_pseudo_masks_weights_files_and_predict(runs, held_out, tmp_path):
    rule = _rule(runs, 's2')
    crf.main(runs.argv('--splits', 'testA', '--crf_params', 'alpha=2,n_iter=3', name='s2'))
    pseudo.main(runs.argv('--crf_workers', 1, name='s2'))
    opt = TestOptions().parse(runs.argv(name='s2'))
    paths_A = list_images(os.path.join(runs.data_dir, '6_A_weak'))
    items = predict_split(load_model(opt, rule['checkpoint']), [(path, None) for path in paths_A], 'A',
                          **loader_args(opt))
    gated = [item['name'] for item in items if item['score'] < rule['gate']['threshold']]
    assert _json(os.path.join(runs.folder('s2'), 'pseudo', 'summary.json'))['n_A_gated'] == len(gated)
    for name in gated:
        assert not read_mask(os.path.join(runs.folder('s2'), 'pseudo', 'A', 'masks', name + '.png')).any()

    weights, readme = str(tmp_path / 's2.pt'), tmp_path / 'README.md'
    export_weights.main(['--run', runs.folder('s2'), '--out', weights, '--readme', str(readme), '--dataset', 'tiny'])
    section = readme.read_text()
    assert f"image-level gate {rule['gate']['threshold']:.4g}." in section
    assert '| val + 2 normal images held out of B_weak | before CRF |' in section
    state = torch.load(weights, weights_only=True)
    assert state['selection']['gate'] == rule['gate'] and state['options']['hold_out_normals'] == 2
    testB = os.path.join(runs.data_dir, 'testB')
    rows = predict.main(['--weights', weights, '--input', testB, '--output', str(tmp_path / 'p'), *FAST_PREDICT])
    for row in rows:
        name = os.path.splitext(os.path.basename(row['file']))[0]
        expected = read_mask(os.path.join(runs.folder('s2'), 'test', 'testB', 'masks', name + '.png'))
        assert row['lesion'] == int(expected.any())
        if row['lesion_score'] < rule['gate']['threshold']:
            assert row['lesion'] == 0


@pytest.mark.slow
def test_the_two_stage_file_gates_on_the_u_nets_score_only(runs, held_out, tmp_path):
    stage1, both, alone = (str(tmp_path / f'{name}.pt') for name in ('stage1', 'both', 'alone'))
    export_weights.main(['--run', runs.folder('s1'), '--out', stage1])
    export_weights.main(['--run', runs.folder('s2'), '--out', both, '--generator', stage1])
    export_weights.main(['--run', runs.folder('s2'), '--out', alone])
    # The held-out normals are read from the U-Net's options inside the file; its map chooses the gate the
    # U-Net's file alone chooses (both hold the same half-precision weights).
    for weights, name in ((both, 'both_seg'), (alone, 'alone')):
        test_script.main(runs.argv('--splits', 'testB', '--weights', weights, '--map_mode', 'seg', name=name))
    seg_rule, alone_rule = _rule(runs, 'both_seg'), _rule(runs, 'alone')
    assert seg_rule['hold_out_normals'] == 2 and seg_rule['gate'] == alone_rule['gate'] is not None
    assert seg_rule['gate_choice'] == alone_rule['gate_choice']
    # The generator trained on every normal image: its score may not choose a gate (chosen anew: the file
    # stores stage 1's own choices for cam).
    test_script.main(runs.argv('--splits', 'testB', '--weights', both, '--map_mode', 'cam', '--rechoose', 'True',
                               name='both_cam'))
    cam_rule = _rule(runs, 'both_cam')
    assert cam_rule['gate'] is None and cam_rule['hold_out_normals'] == 2
    assert 'trained on those normal images (it held out 0)' in cam_rule['gate_choice']['reason']
    # predict.py serves the U-Net alone for the seg map: its scores are the U-Net's, as test.py's were.
    released = str(tmp_path / 'released.pt')
    export_weights.main(['--run', runs.folder('both_seg'), '--out', released])
    testB = os.path.join(runs.data_dir, 'testB')
    rows = [predict.main(['--weights', path, '--input', testB, '--output', str(tmp_path / out), *FAST_PREDICT])
            for path, out in ((released, 'r'), (alone, 'a'))]
    assert [row['lesion_score'] for row in rows[0]] == [row['lesion_score'] for row in rows[1]]
    assert [row['lesion'] for row in rows[0]] == [row['lesion'] for row in rows[1]]
