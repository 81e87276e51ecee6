"""pipeline.py with fake steps (tests/fake_pipeline.py): the record and the released file describe this run's
steps alone; every recipe value is checked before a step runs; Ctrl-C and SIGTERM stop it with 128 + the
signal and the same command continues; damaged or unusable inputs give one line."""
import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import fake_pipeline
import pipeline
from conftest import REPO_ROOT, wait_until
from models.base_model import CHECKPOINT_FORMAT
from records import pipeline_record
from util.atomic import atomic_write

DATASET, FOLDER = 'mine', 'mine_1'
ROUND = ['train', 'test', 'crf']
RELEASE = ['cascade', 'release_test', 'release_crf', 'release_export']
TRAINED = ['stage1', 'stage1_test', 'stage1_crf', 'stage1_export', 'stage1_pseudo']
FROM_FILE = ['stage1_test', 'stage1_crf', 'stage1_pseudo']


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder holding a (one-file) dataset, made current; pipeline.py's steps are fakes run in this process."""
    data = tmp_path / 'data' / DATASET / FOLDER / '2_A_weak'
    data.mkdir(parents=True)
    (data / 'a.png').write_bytes(b'an image')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, 'run_script', fake_pipeline.in_process)
    monkeypatch.setenv('FAKE_LOG', str(tmp_path / 'steps.log'))
    return tmp_path


def recipe(name, text='', rounds=1):
    path = os.path.abspath(name)
    with open(path, 'w') as handle:
        handle.write(f'[pipeline]\nrounds = {rounds}\n{text}')
    return path


def argv(recipe_path, *extra, name='p'):
    return ['--dataroot', 'data', '--dataset', DATASET, '--folder', FOLDER, '--recipe', recipe_path,
            '--name', name, '--result_dir', 'results', *extra]


def folder(name='p'):
    return os.path.join('results', DATASET, FOLDER, name)


def record(name='p'):
    with open(os.path.join(folder(name), 'pipeline.json')) as handle:
        return json.load(handle)


def released_steps(name='p'):
    """The step names of the released file's record (the fake export writes it as JSON)."""
    with open(os.path.join(folder(name), 'release.pt')) as handle:
        return list(json.load(handle)['pipeline']['steps'])


def stage1_file(path, model='cltnet'):
    torch.save({'format': CHECKPOINT_FORMAT, 'architecture': {'model': model}}, path)
    return str(path)


def test_fewer_rounds_leave_only_this_runs_steps_in_the_record_and_the_released_file(work):
    pipeline.main(argv(recipe('two.toml', rounds=2)))
    assert len(record()['steps']) == 16 and len(released_steps()) == 15
    pipeline.main(argv(recipe('one.toml')))
    pipeline.main(argv(recipe('one.toml'), name='fresh'))
    expected = TRAINED + [f'r1_{step}' for step in ROUND] + RELEASE
    assert list(record()['steps']) == list(record('fresh')['steps']) == expected
    assert released_steps() == released_steps('fresh') == expected[:-1]
    assert set(record()['superseded']) == {'r1_pseudo', 'r2_train', 'r2_test', 'r2_crf'}


def test_a_stage1_file_instead_of_training_sets_the_trained_stage1_aside_and_back(work, capsys):
    one = recipe('one.toml')
    pipeline.main(argv(one))
    given = stage1_file(work / 'stage1.pt')
    pipeline.main(argv(one, '--from_stage1', given))
    pipeline.main(argv(one, '--from_stage1', given, name='fresh'))
    expected = FROM_FILE + [f'r1_{step}' for step in ROUND] + RELEASE
    assert list(record()['steps']) == list(record('fresh')['steps']) == expected
    assert released_steps() == released_steps('fresh') == expected[:-1]
    assert set(record()['superseded']) == {'stage1', 'stage1_export'}
    capsys.readouterr()
    pipeline.main(argv(one))  # training stage 1 again: its finished training comes back, not redone
    assert '[stage1] up to date' in capsys.readouterr().out and 'superseded' not in record()
    assert list(record()['steps']) == TRAINED + [f'r1_{step}' for step in ROUND] + RELEASE


def test_an_empty_from_stage1_trains_stage1_where_the_recipe_names_a_file(work):
    given = stage1_file(work / 'stage1.pt')
    named = recipe('named.toml', f'from_stage1 = "{given}"\n')
    pipeline.main(argv(named))
    assert list(record()['steps'])[:len(FROM_FILE)] == FROM_FILE
    pipeline.main(argv(named, '--from_stage1', '', name='rebuilt'))
    assert list(record('rebuilt')['steps']) == TRAINED + [f'r1_{step}' for step in ROUND] + RELEASE
    snapshots = [json.loads(open(os.path.join(folder(name), 'steps.json')).read()) for name in ('p', 'rebuilt')]
    assert 'overrides' not in snapshots[0]  # the recipe as written: nothing set instead of it
    assert snapshots[1]['overrides'] == {'pipeline.from_stage1': ''}
    assert snapshots[1]['command'].endswith("--from_stage1 ''")  # a command that runs as shown


@pytest.mark.parametrize('text, message', [
    ('[stage2]\nlr = "fast"\n', '[stage2] lr = "fast": train.py refuses it: argument --lr: invalid float value: '
                                "'fast'"),
    ('[common]\nimg_size = 100000\n', '[common] img_size = 100000: train.py refuses it: --img_size must be at most '
                                      '2048 (memory grows with its square; the paper uses 256), got 100000'),
    ('[stage1]\nch = 54000\n', '[stage1] ch = 54000: train.py refuses it: --ch must be between 1 and 512'),
    ('[stage2]\nbatch_size = 0\n', '[stage2] batch_size = 0: train.py refuses it: --batch_size must be at least 1'),
    ('[test]\nmap_mode = "nope"\n', '[test] map_mode = "nope": test.py refuses it: --map_mode must be one of'),
    ('[crf]\ncrf_params = "alpha=x"\n', '[crf] crf_params = "alpha=x": crf.py refuses it: --crf_params'),
    ('[pseudo]\nboundary_band = 2.0\n', '[pseudo] boundary_band = 2.0: pseudo.py refuses it: --boundary_band'),
])
def test_a_value_any_step_would_refuse_stops_the_pipeline_before_the_first_step(work, text, message):
    path = recipe('bad.toml', text, rounds=2)
    with pytest.raises(SystemExit) as info:
        pipeline.main(argv(path))
    assert str(info.value.code).startswith(f'error: {path}: {message}')
    assert not os.path.exists('results') and not os.path.exists('steps.log')


@pytest.mark.parametrize('model, kind', [('cascade', 'a two-stage (cascade) file'), ('seg', 'a stage-2 (U-Net) file')])
def test_a_from_stage1_file_of_another_kind_is_refused_before_the_first_step(work, model, kind):
    given = stage1_file(work / 'two_stage.pt', model)
    with pytest.raises(SystemExit) as info:
        pipeline.main(argv(recipe('one.toml', f'from_stage1 = "{given}"\n')))
    assert str(info.value.code).startswith(f'error: {given} is {kind}, not a stage-1 file; from_stage1 takes')
    assert not os.path.exists('results')


@pytest.mark.slow
@pytest.mark.parametrize('number', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_pipeline_with_128_plus_it_and_the_same_command_continues(work, number, capsys):
    """Ctrl-C reaches the pipeline and its step (their process group); SIGTERM the pipeline, which passes it on."""
    one = recipe('one.toml')
    env = dict(os.environ, FAKE_BLOCK='p_stage1')
    child = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, 'tests', 'fake_pipeline.py'), *argv(one)],
                             env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    started = os.path.join(folder('p_stage1'), 'started')
    assert wait_until(lambda: os.path.isfile(started) or child.poll() is not None, timeout_s=120)
    if number == signal.SIGINT:
        os.killpg(child.pid, number)
    else:
        os.kill(child.pid, number)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + number, stderr
    name = signal.Signals(number).name
    assert stderr.splitlines()[-1] == f'pipeline stopped in step stage1 by {name}; the same command continues it'
    assert record()['steps']['stage1']['status'] == 'started'
    pipeline.main(argv(one))
    assert '[stage1] continuing' in capsys.readouterr().out
    with open('steps.log') as handle:
        assert handle.read().splitlines()[1].endswith('--resume True')  # the first line: the stopped run


def _no_space(path, obj):
    def write(handle):
        raise OSError(errno.ENOSPC, 'No space left on device')
    atomic_write(path, write)


def test_a_full_disk_on_the_record_gives_one_line(work, monkeypatch):
    monkeypatch.setattr(pipeline_record, 'write_json_atomic', _no_space)
    with pytest.raises(SystemExit) as info:
        pipeline.main(argv(recipe('one.toml')))
    path = os.path.join(folder(), 'pipeline.json')
    assert str(info.value.code).startswith(f'error: cannot write {path} (No space left on device); ')
    assert str(info.value.code).endswith('free some space, then run the same command again (finished steps are kept)')


def test_a_read_only_result_folder_gives_one_line(work, monkeypatch):
    """As on a read-only mount of the working folder (chmod does not stop root, so the refusal is simulated)."""
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR) and os.path.abspath(path).startswith(str(work)):
            raise OSError(errno.EROFS, 'Read-only file system', path)
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, 'open', read_only)
    with pytest.raises(SystemExit) as info:
        pipeline.main(argv(recipe('one.toml')))
    assert info.value.code == (f'error: cannot write in {work} (Read-only file system); pass a writable --result_dir '
                               f'or fix the folder permissions')
    assert not os.path.exists('results')


@pytest.mark.parametrize('text, problem', [
    ('{"steps": {"stage1": {"argv": ["train.py"', 'not JSON: '),
    ('[]', "no 'steps' table"),
    ('{"choose": null}', "no 'steps' table"),
    ('{"steps": {"stage1": 3}}', "step 'stage1' is not a table"),
    ('{"steps": {"stage1": {"status": "done"}}}', "step 'stage1' lacks one of argv, inputs, status, outputs"),
])
def test_a_damaged_record_gives_one_line_with_the_fix(work, text, problem):
    os.makedirs(folder())
    path = os.path.join(folder(), 'pipeline.json')
    with open(path, 'w') as handle:
        handle.write(text)
    with pytest.raises(SystemExit) as info:
        pipeline.main(argv(recipe('one.toml')))
    message = str(info.value.code)
    assert message.startswith(f'error: {path} is not a pipeline record ({problem}') and '\n' not in message
    assert message.endswith('remove it to start over (every step then runs again) or put back a copy of it')


def test_a_recipe_that_is_a_folder_or_not_utf8_gives_one_line(work):
    os.mkdir('folder.toml')
    with open('latin1.toml', 'wb') as handle:
        handle.write('[stage1]\n# Größe\n'.encode('latin-1'))
    for path, message in (('folder.toml', 'folder.toml is a folder; pass a recipe file such as recipes/ISIC.toml'),
                          ('latin1.toml', 'latin1.toml: not UTF-8 text (byte 13); save the recipe as UTF-8')):
        with pytest.raises(SystemExit) as info:
            pipeline.main(argv(path))
        assert info.value.code == f'error: {message}'


def test_a_readme_that_is_a_folder_or_binary_is_refused_before_anything_runs(work):
    os.mkdir('docs')
    with open('weights.pt', 'wb') as handle:
        handle.write(b'\x80\x02PK\x00\xff')
    fix = 'pass a Markdown file such as weights/README.md (or a new file name)'
    for path, problem in (('docs', 'is a folder, not a Markdown file'),
                          ('weights.pt', 'is not UTF-8 text (byte 0), so not a Markdown file')):
        with pytest.raises(SystemExit) as info:
            pipeline.main(argv(recipe('one.toml'), '--readme', path))
        assert info.value.code == f'error: {path} {problem}; {fix}'
    assert not os.path.exists('results')


def test_a_damaged_step_record_gives_one_line_and_the_rerun_redoes_that_step(work, monkeypatch, capsys):
    damaged = os.path.join(folder('p_r1'), 'crf', 'selection.json')

    def crf_writes_half_a_record(words, deadline=None):
        code = fake_pipeline.in_process(words)
        if os.path.isfile(damaged):
            with open(damaged, 'w') as handle:
                handle.write('{"selection": {"val_DI_af')
        return code
    monkeypatch.setattr(pipeline, 'run_script', crf_writes_half_a_record)
    one = recipe('one.toml')
    with pytest.raises(SystemExit) as info:
        pipeline.main(argv(one))
    assert str(info.value.code).startswith(f'error: {damaged} is not readable JSON (JSONDecodeError: ')
    assert str(info.value.code).endswith(': delete it and run the same command again')
    monkeypatch.setattr(pipeline, 'run_script', fake_pipeline.in_process)
    capsys.readouterr()
    os.remove(damaged)  # as the line says
    pipeline.main(argv(one))
    assert '[r1_crf] running' in capsys.readouterr().out
