"""pipeline.py: the whole chain on tiny phantoms, killed in the middle of a training step and run
again, against an uninterrupted run; recipe checks; the released file served by test.py + crf.py."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import crf
import pipeline
from conftest import REPO_ROOT, TINY_DATASET, TINY_FOLDER, help_text, test_script, tiny_recipe, wait_until
from workflow.recipe import RecipeError, read_recipe

SCORES = ('JA', 'DI', 'AC', 'SE', 'SP')


def pipeline_argv(dataroot, recipe, name='p'):
    """pipeline.py's words, writing to ./results of the folder it runs in (relative, as a user would)."""
    return [os.path.join(REPO_ROOT, 'pipeline.py'), '--dataroot', dataroot, '--dataset', TINY_DATASET,
            '--folder', TINY_FOLDER, '--recipe', recipe, '--name', name, '--result_dir', 'results']


def start(argv, folder, log):
    """pipeline.py in ``folder``, in a process group of its own (so the test can kill it and every step
    it started)."""
    return subprocess.Popen([sys.executable, *argv], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS='1'))


def outcome(folder, name='p'):
    """What a rerun must reproduce: every run's decisions and the release scores."""
    root = os.path.join(str(folder), 'results', TINY_DATASET, TINY_FOLDER)
    found = {}
    for run in sorted(os.listdir(root)):
        for stage in ('test', 'crf'):
            path = os.path.join(root, run, stage, 'selection.json')
            if os.path.isfile(path):
                with open(path) as handle:
                    found[f'{run}/{stage}'] = json.load(handle)['selection']
    for stage in ('test', 'crf'):
        with open(os.path.join(root, f'{name}_release', stage, 'testA', 'summary.json')) as handle:
            summary = json.load(handle)
        found[f'release/{stage}/testA'] = {k: summary[k] for k in SCORES}
    return found


@pytest.fixture(scope='module')
def uninterrupted(tiny_dataroot, tmp_path_factory):
    """One whole pipeline run (the reference)."""
    tmp = tmp_path_factory.mktemp('pipeline_ref')
    recipe = tiny_recipe(tmp / 'tiny.toml')
    with open(tmp / 'log.txt', 'w') as log:
        code = start(pipeline_argv(tiny_dataroot, recipe), tmp, log).wait(timeout=280)
    assert code == 0, (tmp / 'log.txt').read_text()[-3000:]
    return tmp, recipe


@pytest.mark.slow
def test_killed_in_a_training_step_then_rerun_gives_the_same_result(uninterrupted, tiny_dataroot, tmp_path):
    reference, recipe = uninterrupted
    root = tmp_path / 'results' / TINY_DATASET / TINY_FOLDER
    record_path = root / 'p' / 'pipeline.json'
    checkpoint = root / 'p_stage1' / 'checkpoints' / 'iter_0000010.pt'
    with open(tmp_path / 'log1.txt', 'w') as log:
        process = start(pipeline_argv(tiny_dataroot, recipe), tmp_path, log)
        assert wait_until(lambda: os.path.isfile(checkpoint) or process.poll() is not None, timeout_s=120)
        os.killpg(process.pid, signal.SIGKILL)  # the pipeline and its training step, as a lost session
        process.wait()
    with open(record_path) as handle:
        assert json.load(handle)['steps']['stage1']['status'] == 'started'
    with open(tmp_path / 'log2.txt', 'w') as log:
        code = start(pipeline_argv(tiny_dataroot, recipe), tmp_path, log).wait(timeout=280)
    text = (tmp_path / 'log2.txt').read_text()
    assert code == 0, text[-3000:]
    assert '[stage1] continuing' in text and 'resumed from' in text
    assert outcome(tmp_path) == outcome(reference)

    # The same command once more: every step is up to date, nothing runs.
    again = subprocess.run([sys.executable, *pipeline_argv(tiny_dataroot, recipe)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert 'running:' not in again.stdout and again.stdout.count('up to date') == 12


@pytest.mark.slow
def test_changed_flag_redoes_that_step_and_the_ones_after(uninterrupted, tiny_dataroot, tmp_path):
    reference, recipe = uninterrupted
    shutil.copytree(reference / 'results', tmp_path / 'results')
    changed = tmp_path / 'changed.toml'
    changed.write_text(open(recipe).read().replace('[crf]\n', '[crf]\ncrf_params = "alpha=2,n_iter=5"\n'))
    run = subprocess.run([sys.executable, *pipeline_argv(tiny_dataroot, str(changed))], cwd=tmp_path,
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-2000:]
    ran = [line.split(']')[0][1:] for line in run.stdout.splitlines() if '] running:' in line]
    skipped = [line.split(']')[0][1:] for line in run.stdout.splitlines() if 'up to date' in line]
    assert skipped == ['stage1', 'stage1_test']
    assert ran[0] == 'stage1_crf' and ran[-1] == 'release_export' and len(ran) == 10


@pytest.mark.slow
def test_released_file_serves_test_and_crf_on_test_splits_only(uninterrupted, tiny_dataroot, tmp_path):
    reference, _ = uninterrupted
    released = os.path.join(reference, 'results', TINY_DATASET, TINY_FOLDER, 'p', 'release.pt')
    state = torch.load(released, weights_only=True)
    assert state['architecture']['model'] == 'cascade'
    assert set(state['pipeline']) >= {'command', 'recipe', 'recipe_path', 'steps', 'choose', 'seed'}
    assert 'r1_train' in state['pipeline']['steps'] and state['pipeline']['recipe'].startswith('[pipeline]')
    # A folder holding only testA and testB: the file's stored choices serve.
    root = tmp_path / 'data' / TINY_DATASET / TINY_FOLDER
    for split in ('testA', 'testB'):
        shutil.copytree(os.path.join(tiny_dataroot, TINY_DATASET, TINY_FOLDER, split), root / split)
    argv = ['--dataroot', str(tmp_path / 'data'), '--dataset', TINY_DATASET, '--folder', TINY_FOLDER,
            '--result_dir', str(tmp_path / 'results'), '--name', 'served', '--num_workers', '0', '--device', 'cpu']
    test_script.main(argv + ['--weights', released])
    summaries = crf.main(argv + ['--weights', released])
    assert summaries['testA']['selection']['chosen_on'] == 'stored'
    assert summaries['testA']['selection']['crf'] == state['selection']['crf']
    assert 0 <= summaries['testA']['DI'] <= 1 and 'fp_rate' in summaries['testB']


@pytest.mark.parametrize('text, message', [
    ('[pipeline]\nrounds = 2\nspeed = 3\n', "unknown key 'speed' in [pipeline]"),
    ('[stage1]\nitertion = 5\n', '[stage1] itertion: not a flag of the stage1 step'),
    ('[crf]\nlr = 0.1\n', '[crf] lr: not a flag of the crf step'),
    ('[common]\nitertion = 5\n', '[common] itertion: not a flag of any script; check the spelling against python '
                                 'train.py --help (or test.py, crf.py, pseudo.py: [common] reaches all four)'),
    ('[test]\nname = "x"\n', '[test] name is set by the pipeline itself'),
    ('[extra]\na = 1\n', 'unknown section [extra]'),
    ('[pipeline]\nrounds = 0\n', '[pipeline] rounds must be at least 1, got 0'),
    ('[stage2]\nhold_out_normals = 5\n', '[stage2] hold_out_normals is set by the pipeline itself'),
    ('[pipeline]\nhold_out_normals = -1\n', '[pipeline] hold_out_normals is a number of normal images, got -1'),
    ('[pipeline\n', 'not valid TOML'),
])
def test_bad_recipe_is_refused_before_anything_runs(tmp_path, text, message):
    path = tmp_path / 'bad.toml'
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        read_recipe(str(path))
    assert str(info.value).startswith(f'{path}: ') and message in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        pipeline.main(['--dataset', 'demo', '--recipe', str(path), '--result_dir', str(tmp_path / 'results')])
    assert str(exit_info.value.code) == f'error: {info.value}'
    assert not (tmp_path / 'results').exists()


def test_held_out_normals_reach_every_stage2_training_only(tmp_path, monkeypatch):
    recipe = tiny_recipe(tmp_path / 'recipe.toml', rounds=2, hold_out_normals=3)
    steps = []
    monkeypatch.setattr(pipeline.Pipeline, 'execute', lambda self, step: steps.append(step))
    runner = pipeline.Pipeline(pipeline.parse_args(['--dataset', 'demo', '--recipe', recipe]), read_recipe(recipe))
    runner.rounds()
    held = {step.name for step in steps if '--hold_out_normals' in step.argv}
    assert held == {'r1_train', 'r2_train'} and len(steps) == 7  # each round: train, test, crf; r1 also pseudo
    assert all(step.argv[step.argv.index('--hold_out_normals') + 1] == '3' for step in steps if step.name in held)
    assert not any('--hold_out_group' in step.argv for step in steps)


def test_held_out_patients_reach_stage2_training_with_their_count(tmp_path, monkeypatch):
    recipe = tiny_recipe(tmp_path / 'recipe.toml', hold_out_normals=3, hold_out_group='^(.*)_')
    steps = []
    monkeypatch.setattr(pipeline.Pipeline, 'execute', lambda self, step: steps.append(step))
    pipeline.Pipeline(pipeline.parse_args(['--dataset', 'demo', '--recipe', recipe]), read_recipe(recipe)).rounds()
    train_argv = next(step.argv for step in steps if step.name == 'r1_train')
    assert train_argv[train_argv.index('--hold_out_normals'):][:4] == ['--hold_out_normals', '3', '--hold_out_group',
                                                                       '^(.*)_']


def test_committed_recipes_are_valid(monkeypatch):
    """Released recipes and the candidates tried against them (recipes/candidates/): every step of each takes
    its flags, as pipeline.py checks before its first step (stage-1 files relative to the repository)."""
    paths = sorted(glob.glob(os.path.join(REPO_ROOT, 'recipes', '**', '*.toml'), recursive=True))
    assert len(paths) >= 6 and any(os.sep + 'candidates' + os.sep in path for path in paths)
    monkeypatch.chdir(REPO_ROOT)
    for path in paths:
        recipe = read_recipe(path)
        dataset = os.path.basename(path).split('_')[0].removesuffix('.toml')
        steps = pipeline.Pipeline(pipeline.parse_args(['--dataset', dataset, '--recipe', path]), recipe).check()
        assert len(steps) >= 10 and recipe['pipeline']['rounds'] >= 1


def test_help_documents_every_flag(capsys):
    text = help_text(capsys, pipeline.parse_args)
    parser_flags = ('--dataroot', '--dataset', '--folder', '--recipe', '--name', '--result_dir', '--out',
                    '--readme', '--from_stage1', '--seed')
    for flag in parser_flags:
        assert flag in text
    assert text.count('default') >= 5 and 'release_export' in text


@pytest.mark.parametrize('flag, value', [('--name', '../x'), ('--folder', '../../ISIC/copy'), ('--dataset', '..')])
def test_the_run_name_and_data_folders_are_one_folder_each(flag, value, capsys):
    words = {'--dataset': 'demo', '--recipe': 'recipes/demo.toml', flag: value}
    with pytest.raises(SystemExit) as info:
        pipeline.parse_args([word for pair in words.items() for word in pair])
    assert info.value.code == 2 and f'{flag} must be one folder name' in capsys.readouterr().err


def test_step_timer_records_seconds(monkeypatch, tmp_path):
    """A step that fails keeps its record 'started' with the time it took, and says how to go on."""
    args = pipeline.parse_args(['--dataset', 'demo', '--recipe', 'recipes/demo.toml', '--result_dir', str(tmp_path)])
    monkeypatch.setattr(pipeline, 'run_script', lambda argv: time.sleep(0.05) or 3)
    runner = pipeline.Pipeline(args, read_recipe(os.path.join(REPO_ROOT, 'recipes', 'demo.toml')))
    os.makedirs(runner.folder)
    with pytest.raises(SystemExit) as info:
        runner.execute(pipeline.Step('stage1', ['train.py'], inputs=[], outputs=[]))
    assert str(info.value.code) == ('error: step stage1 failed (exit 3); fix what it printed above and run the same '
                                    'command again (finished steps are kept)')
    record = json.loads(open(os.path.join(runner.folder, 'pipeline.json')).read())['steps']['stage1']
    assert record['status'] == 'started' and record['seconds_before'] >= 0.05


def test_start_train_all_runs_the_pipeline_with_the_datasets_recipe(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    script = os.path.join(REPO_ROOT, 'start_train.sh')
    env = dict(os.environ, PYTHON=str(fake), DATAROOT='../data', NAME='mine')
    ran = subprocess.run(['bash', script, 'ISIC', 'all', '--seed', '3'], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert ran == ['pipeline.py', '--dataroot', '../data', '--dataset', 'ISIC', '--recipe', 'recipes/ISIC.toml',
                   '--name', 'mine', '--seed', '3']
    ran = subprocess.run(['bash', script, 'all'], env=dict(env, RECIPE='my.toml'), capture_output=True, text=True,
                         check=True).stdout.split()
    assert ran[:7] == ['pipeline.py', '--dataroot', './dataset', '--dataset', 'demo', '--recipe', 'my.toml']


@pytest.mark.slow
def test_a_cam_stage1_and_a_pretrained_unet_make_a_released_file(tiny_dataroot, tmp_path):
    """Stage 1 from another localisation model ([stage1] model = "cam") and stage 2 on the pretrained
    encoder: the pipeline joins them into a two-stage file that test.py serves with its stored choices."""
    recipe = tiny_recipe(tmp_path / 'cam.toml')
    text = open(recipe).read().replace('[stage1]\n', '[stage1]\nmodel = "cam"\n')
    text = text.replace('[stage2]\n', '[stage2]\nencoder = "efficientnet-lite0"\n')
    text = text.replace('[crf]\n', '[crf]\ncrf_params = "n_iter=2"\n')
    (tmp_path / 'cam.toml').write_text(text)
    with open(tmp_path / 'log.txt', 'w') as log:
        code = start(pipeline_argv(tiny_dataroot, recipe), tmp_path, log).wait(timeout=280)
    assert code == 0, (tmp_path / 'log.txt').read_text()[-3000:]
    state = torch.load(tmp_path / 'results' / TINY_DATASET / TINY_FOLDER / 'p' / 'release.pt', weights_only=True)
    assert state['architecture']['stage1_model'] == 'cam'
    assert state['architecture']['seg_encoder'] == 'efficientnet-lite0'
    assert set(state['nets']) == {'classifier', 'seg'} and state['selection']['map_mode'] in ('cam', 'seg', 'seg-flips')
