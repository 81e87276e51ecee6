"""Released weights: tools/export_weights.py, then test.py --weights and crf.py on data without val."""
import json
import os
import shutil

import pytest
import torch

import crf
import test as test_script
import train
from conftest import TINY_DATASET, TINY_FOLDER
from tools.export_weights import export, readme_section
from util.pipeline_report import replace_section
from util.machine import machine

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


def test_weights_work_on_a_folder_with_only_testA_and_testB(released, tiny_dataroot, tiny_test_argv, tmp_path):
    # The released-weights use case: no training folders and no val split at all.
    root = tmp_path / 'bare'
    source = os.path.join(tiny_dataroot, TINY_DATASET, TINY_FOLDER)
    for split in ('testA', 'testB'):
        shutil.copytree(os.path.join(source, split), root / TINY_DATASET / TINY_FOLDER / split)
    out = str(tmp_path / 'out')
    argv = tiny_test_argv('--dataroot', str(root), '--result_dir', out, name='rel')
    test_script.main(argv + ['--weights', released])
    crf.main(argv + ['--num_workers', '1'])
    stored = torch.load(released, map_location='cpu', weights_only=False)['selection']
    tested = _summary(out, 'test', 'testA', 'rel')
    refined = _summary(out, 'crf', 'testA', 'rel')
    for summary in (tested, refined):
        assert all(0 <= summary[k] <= 1 for k in ('JA', 'DI', 'AC', 'SE', 'SP'))
    assert tested['selection']['chosen_on'] == 'stored'
    assert tested['selection']['threshold'] == stored['threshold']
    assert refined['selection']['chosen_on'] == 'stored'
    assert refined['selection']['crf'] == stored['crf']


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
