"""Released weights: tools/export_weights.py, then test.py --weights and crf.py on data without val."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import crf
import train
from conftest import REPO_ROOT, TINY_DATASET, TINY_FOLDER, test_script
from data.image_io import read_mask
from tools import export_weights
from tools.export_weights import export, readme_section
from records.run_folder import list_checkpoints
from refinement.crf_utils import read_prob
from reporting.pipeline_report import replace_section
from util.machine import machine
from evaluation.metrics import SCORE_NAMES

CRF_FLAGS = ['--crf_params', 'alpha=2,n_iter=5', '--num_workers', '1']


@pytest.fixture
def released(tiny_argv, tiny_test_argv, run_folder, tmp_path):
    """A tiny run trained, tested and CRF-refined, exported to ``tmp_path/weights.pt``; returns its path."""
    assert train.main(tiny_argv('--iteration', 2, '--save_freq', 2)) == 0
    test_script.main(tiny_test_argv())
    crf.main(tiny_test_argv(*CRF_FLAGS))
    path = str(tmp_path / 'weights.pt')
    export(run_folder(), path)
    return path


def _summary(root, tool, split, name):
    with open(os.path.join(root, TINY_DATASET, TINY_FOLDER, name, tool, split, 'summary.json')) as handle:
        return json.load(handle)


def test_weights_hold_the_generator_in_half_precision_and_every_val_choice(released, run_folder):
    state = torch.load(released, map_location='cpu', weights_only=False)
    assert list(state['nets']) == ['G_AB']
    assert all(v.dtype == torch.float16 for v in state['nets']['G_AB'].values() if v.is_floating_point())
    selection = state['selection']
    with open(os.path.join(run_folder(), 'test', 'selection.json')) as handle:
        chosen = json.load(handle)['selection']
    for key in ('map_mode', 'binarize', 'threshold', 'postprocess', 'step'):
        assert selection[key] == chosen[key]
    assert selection['crf']['alpha'] == 2 and selection['crf']['n_iter'] == 5
    assert state['architecture']['img_size'] == 32 and state['options']['ch'] == 4


@pytest.fixture
def bare_dataroot(tiny_dataroot, tmp_path):
    """The released-weights use case: a copy of the tiny folder with testA and testB only (no training
    folders, no val split); returns its dataroot."""
    root = tmp_path / 'bare'
    source = os.path.join(tiny_dataroot, TINY_DATASET, TINY_FOLDER)
    for split in ('testA', 'testB'):
        shutil.copytree(os.path.join(source, split), root / TINY_DATASET / TINY_FOLDER / split)
    return str(root)


def test_weights_work_on_a_folder_with_only_testA_and_testB(released, bare_dataroot, tiny_test_argv, run_folder,
                                                           tmp_path):
    out = str(tmp_path / 'out')
    argv = tiny_test_argv('--dataroot', bare_dataroot, '--result_dir', out, name='rel')
    test_script.main(argv + ['--weights', released])
    names = sorted(os.listdir(os.path.join(out, TINY_DATASET, TINY_FOLDER, 'rel', 'test', 'testA', 'masks')))
    assert len(names) == 3
    crf.main(argv + ['--num_workers', '1'])
    stored = torch.load(released, map_location='cpu', weights_only=False)['selection']
    tested = _summary(out, 'test', 'testA', 'rel')
    refined = _summary(out, 'crf', 'testA', 'rel')
    # The run's own testA result, from the checkpoint in float32: the half-precision copy moves a few
    # pixels across the threshold at most.
    own = _summary(str(tmp_path / 'results'), 'test', 'testA', 'run')
    assert {k: tested[k] for k in SCORE_NAMES} == pytest.approx({k: own[k] for k in SCORE_NAMES}, abs=0.005)
    masks = [[read_mask(os.path.join(folder, 'test', 'testA', 'masks', name)) for name in names]
             for folder in (os.path.join(out, TINY_DATASET, TINY_FOLDER, 'rel'), run_folder())]
    assert np.mean(np.stack(masks[0]) != np.stack(masks[1])) < 0.005
    assert all(0 <= refined[k] <= 1 for k in SCORE_NAMES)
    assert tested['selection']['chosen_on'] == 'stored'
    assert tested['selection']['threshold'] == stored['threshold']
    assert refined['selection']['chosen_on'] == 'stored'
    assert refined['selection']['crf'] == stored['crf']


def test_weights_hold_the_chosen_checkpoints_A_to_B_generator(released, run_folder):
    exported = torch.load(released, map_location='cpu', weights_only=False)
    [path] = [path for step, path in list_checkpoints(run_folder()) if step == exported['step']]
    trained = torch.load(path, map_location='cpu', weights_only=False)['nets']
    generator = exported['nets']['G_AB']
    assert list(generator) == list(trained['G_AB'])
    for key, value in generator.items():
        assert torch.equal(value, trained['G_AB'][key].to(value.dtype)), key
    # The two generators share one architecture: only the values tell the lesion-removing one apart.
    assert not all(torch.equal(value, trained['G_BA'][key].to(value.dtype)) for key, value in generator.items())


@pytest.mark.parametrize('name', ['ISIC.pt', 'ISIC_stage1.pt', 'ISIC_stage1_lite0.pt', 'BraTS.pt', 'BraTS_stage1.pt'])
def test_shipped_weights_serve_a_folder_with_their_stored_choices(name, bare_dataroot, tiny_test_argv, tmp_path):
    """Each file of weights/ loads into today's code and applies what val chose when it was exported."""
    weights = os.path.join(REPO_ROOT, 'weights', name)
    out = str(tmp_path / 'out')
    test_script.main(tiny_test_argv('--dataroot', bare_dataroot, '--result_dir', out, '--weights', weights,
                                    name='shipped'))
    stored = torch.load(weights, map_location='cpu', weights_only=False)['selection']
    chosen = _summary(out, 'test', 'testA', 'shipped')['selection']
    rule = ('map_mode', 'binarize', 'threshold', 'postprocess', 'step')
    assert chosen['chosen_on'] == 'stored' and {k: chosen[k] for k in rule} == {k: stored[k] for k in rule}
    for split, count in (('testA', 3), ('testB', 2)):
        folder = os.path.join(out, TINY_DATASET, TINY_FOLDER, 'shipped', 'test', split)
        names = sorted(os.listdir(os.path.join(folder, 'masks')))
        assert len(names) == count and sorted(os.listdir(os.path.join(folder, 'prob'))) == names
        for image in names:
            mask = read_mask(os.path.join(folder, 'masks', image))
            assert mask.shape == (32, 32)
            np.testing.assert_array_equal(read_prob(os.path.join(folder, 'prob', image)) >= 0.5, mask)


def test_export_without_test_run_says_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match='run test.py'):
        export(str(tmp_path), str(tmp_path / 'w.pt'))


def test_readme_section_is_built_from_the_summaries_and_replaced_on_reexport(released, run_folder, tmp_path):
    readme = str(tmp_path / 'README.md')
    selection, state = export(run_folder(), released)
    for _ in range(2):
        replace_section(readme, 'tiny', readme_section('tiny', run_folder(), released, selection, state))
    text = open(readme).read()
    assert text.count('<!-- tiny start -->') == 1
    results = os.path.dirname(os.path.dirname(os.path.dirname(run_folder())))
    tested, refined = (_summary(results, stage, 'testA', 'run') for stage in ('test', 'crf'))
    assert f"{tested['DI']:.4f}" in text and f"{refined['DI']:.4f}" in text
    assert 'Training command: `python ' in text and '--iteration 2' in text and 'Trained 2 steps' in text
    # The machine is the one training ran on, recorded in the checkpoint, not the one exporting.
    assert state['machine'] == machine() and f'Trained 2 steps in 0 min on: {machine()}, ' in text
    moved = dict(state, machine='another CPU, 64 logical cores')
    assert 'on: another CPU, 64 logical cores, ' in readme_section('tiny', run_folder(), released, selection, moved)


STAGE1_STATE = {'step': 500, 'train_seconds': 660.0, 'machine': 'a CPU, 2 logical cores',
                'options': {'iteration': 3000, 'num_threads': 1, 'command_line': 'train.py --iteration 3000'},
                'selection': {'map_mode': 'cam'}}


@pytest.mark.parametrize('newest, expected', [
    ((3000, 5106.0), 'Trained 3000 steps (the schedule) in 85 min on: a CPU, 2 logical cores, 1 torch thread(s); '
                     'val chose the checkpoint at step 500 (11 min in).'),
    (None, "Trained to the 3000-step schedule on: a CPU, 2 logical cores, 1 torch thread(s); val chose the "
           "checkpoint at step 500 (11 min in; the schedule's time is not recorded here)."),
    ((500, 660.0), 'Trained to the 3000-step schedule on: a CPU, 2 logical cores, 1 torch thread(s); val chose the '
                   "checkpoint at step 500 (11 min in; the schedule's time is not recorded here).")])
def test_readme_says_the_schedule_and_the_checkpoint_val_chose_apart(monkeypatch, newest, expected):
    """Issue 42 item 11: 'Trained 500 steps in 11 min' read as the whole training of a 3000-step schedule."""
    monkeypatch.setattr(export_weights, '_newest_checkpoint', lambda run: newest)
    assert export_weights.training_sentence('run', STAGE1_STATE) == expected


def test_newest_checkpoint_reads_the_runs_last_step_and_time(released, run_folder):
    step, seconds = export_weights._newest_checkpoint(run_folder())
    assert step == 2 and seconds >= 0
    assert export_weights._newest_checkpoint(os.path.dirname(run_folder())) is None  # no checkpoints there


def test_a_two_stage_files_stage1_line_says_the_checkpoint_and_the_schedule():
    lines = export_weights._stage1_lines({'stage1': STAGE1_STATE})
    assert ('Stage 1 training command: `python train.py --iteration 3000` (its checkpoint at step 500 of the '
            '3000-step schedule, reached in 11 min; alone, val chose map `cam`).') in lines
