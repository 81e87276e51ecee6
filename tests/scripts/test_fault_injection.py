"""Fault injection: bad inputs, interrupted runs, numerical faults, visdom outages and unwritable or full
result folders, for every script. Each fault must stop the script with an ``error:`` line per problem
(naming the file, saying what to do; all problems of a folder at once; no traceback) and leave what
earlier runs wrote byte for byte as it was, or be survived without loss.

Scripts run in-process (``main(argv)``: a SystemExit with a str code is exactly what Python prints as
that text on stderr, with exit status 1) except where the process itself is the point: stderr and exit
codes of the real command lines, SIGKILL, and SIGTERM sent to a process tree.
"""
import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import namedtuple

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

import crf
import pseudo
import train
from conftest import (REPO_ROOT, TINY_DATASET, TINY_FLAGS, TINY_FOLDER, TINY_TEST_FLAGS, VisdomServer, file_hashes,
                      test_script, traces, usage_error, wait_until)
from data.synthetic import ensure_demo_dataset
from models import base_model, create_model
from models.base_model import CHECKPOINT_FORMAT
from models.cltnet_model import CLTNetModel
from options.crf_options import CRFOptions
from options.pseudo_options import PseudoOptions
from options.test_options import TestOptions
from options.train_options import TrainOptions
from tools import prepare_brats, prepare_isic
from records.run_folder import list_checkpoints
from util.preflight import MIN_FREE_BYTES, checkpoint_bytes
from util.run_lock import LOCK_NAME, RunLock
from reporting.visualizer import Visualizer

# visdom 0.2.4 itself calls the deprecated logger.warn.
pytestmark = pytest.mark.filterwarnings('ignore:The .warn. method is deprecated:DeprecationWarning')

SCRIPTS = ('train', 'test', 'crf')
MAINS = {'train': train.main, 'test': test_script.main, 'crf': crf.main, 'pseudo': pseudo.main}
# train.py continues the baseline run (2 steps) by one step; crf.py and pseudo.py take given parameters
# (no grid search).
SCRIPT_FLAGS = {'train': [*TINY_FLAGS, '--iteration', '3', '--save_freq', '1', '--resume', 'True'],
                'test': list(TINY_TEST_FLAGS),
                'crf': ['--device', 'cpu', '--num_workers', '0', '--crf_params', 'n_iter=2'],
                'pseudo': [*TINY_TEST_FLAGS, '--crf_workers', '0', '--crf_params', 'n_iter=2']}
# The folder each script reads images from, where its faults are put.
FAULT_FOLDER = {'train': '6_A_weak', 'test': 'testA', 'crf': 'testA'}
SKIP_HINT = '--skip_bad_images True'


def run_argv(script, root, results, *extra):
    """Arguments of ``script`` on the dataroot ``root`` writing to ``results``; ``extra`` wins."""
    return ['--dataroot', str(root), '--dataset', TINY_DATASET, '--folder', TINY_FOLDER, '--result_dir',
            str(results), '--name', 'run', *SCRIPT_FLAGS[script], *map(str, extra)]


def error_of(script, argv):
    """The message of the SystemExit ``script`` stops with (a str: Python prints it, no traceback)."""
    with pytest.raises(SystemExit) as info:
        MAINS[script](argv)
    assert isinstance(info.value.code, str), info.value.code
    assert info.value.code.startswith('error: '), info.value.code
    return info.value.code


def run_folder_of(results):
    return results / TINY_DATASET / TINY_FOLDER / 'run'


def _nonfinite(value, where=''):
    """Paths of the non-finite floating-point tensors anywhere in a checkpoint's nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        return [where] if value.is_floating_point() and not torch.isfinite(value).all() else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return [path for key, item in items for path in _nonfinite(item, f'{where}/{key}')]


def sound_checkpoints(folder):
    """Steps of the run's checkpoints, each asserted whole: ours, of its step, every tensor finite."""
    steps = []
    for step, path in list_checkpoints(folder):
        state = torch.load(path, map_location='cpu', weights_only=False)
        assert state['format'] == CHECKPOINT_FORMAT and state['step'] == step, path
        assert _nonfinite(state) == [], path
        steps.append(step)
    return steps


def logged_steps(folder):
    with open(os.path.join(folder, 'loss_log.csv')) as handle:
        return [int(line.split(',')[0]) for line in handle.read().splitlines()[1:]]


# ---- the baseline every bad input is tried against -----------------------------------------------------

@pytest.fixture(scope='module')
def baseline(tmp_path_factory):
    """(dataroot, results) in ``work/``: tiny data with 5 testA images (three bad ones leave two), and a
    run trained 2 steps, tested and CRF-refined on it; ``pristine/`` keeps a copy."""
    base = tmp_path_factory.mktemp('baseline')
    root, results = base / 'work' / 'data', base / 'work' / 'results'
    ensure_demo_dataset(root, dataset=TINY_DATASET, folder=TINY_FOLDER, size=32, n_a=6, n_b=6, n_val=3,
                        n_testA=5, n_testB=2)
    assert train.main(run_argv('train', root, results, '--iteration', 2, '--save_freq', 2)) == 0
    test_script.main(run_argv('test', root, results))
    crf.main(run_argv('crf', root, results))
    shutil.copytree(base / 'work', base / 'pristine')
    return root, results


@pytest.fixture
def workspace(baseline):
    """The baseline (dataroot, results), restored before each test, free to break. Restored in place
    (copies keep their times): test.py's val-selection cache is keyed on checkpoint paths and times."""
    work = baseline[0].parent
    shutil.rmtree(work)
    shutil.copytree(work.parent / 'pristine', work)
    return baseline


def fault_dirs(root, script):
    """(images folder, labels folder or None) where ``script``'s faults go."""
    folder = root / TINY_DATASET / TINY_FOLDER / FAULT_FOLDER[script]
    if script == 'train':
        return folder, None
    return folder / 'images', folder / 'labels'


def _image(images, index):
    return sorted(images.glob('*.png'))[index]


def _label(images, labels, index):
    return labels / f'{_image(images, index).stem}_segmentation.png'


# Each fault breaks (images, labels) and returns the paths the error must name.
def truncated(images, labels, index=0):
    path = _image(images, index)
    path.write_bytes(path.read_bytes()[:200])  # a download cut short
    return [path]


def not_an_image(images, labels):
    path = images / 'notes.png'
    path.write_text('<html>404 Not Found</html>')  # a web page saved as an image
    return [path]


def label_missing(images, labels, index=0):
    _label(images, labels, index).unlink()
    return [_image(images, index)]


def label_without_image(images, labels):
    path = labels / 'orphan_segmentation.png'
    Image.new('L', (32, 32)).save(path)
    return [path]


def label_of_another_size(images, labels, index=0):
    path = _label(images, labels, index)
    Image.new('L', (20, 32)).save(path)
    return [path]


def empty_folder(images, labels):
    for path in sorted(images.glob('*.png')):
        path.unlink()
    return [images]


def several(images, labels):
    """One of each per-file problem in one folder: all must be reported by the same run."""
    paths = truncated(images, labels)
    if labels:
        paths += (label_missing(images, labels, 1) + label_of_another_size(images, labels, 2)
                  + label_without_image(images, labels))
    return paths + not_an_image(images, labels)


LABELLED = ('test', 'crf')
BAD_INPUTS = [(truncated, SCRIPTS), (not_an_image, SCRIPTS), (several, SCRIPTS), (empty_folder, SCRIPTS),
              (label_missing, LABELLED), (label_without_image, LABELLED), (label_of_another_size, LABELLED)]


@pytest.mark.parametrize('script, fault', [pytest.param(script, fault, id=f'{script}-{fault.__name__}')
                                           for fault, scripts in BAD_INPUTS for script in scripts])
def test_bad_input_gives_a_line_per_problem_and_keeps_earlier_outputs(script, fault, workspace):
    root, results = workspace
    before = file_hashes(results)
    named = fault(*fault_dirs(root, script))
    message = error_of(script, run_argv(script, root, results))
    lines = message.splitlines()
    where = [[i for i, line in enumerate(lines) if str(path) in line] for path in named]
    assert all(where), message
    assert len({found[0] for found in where}) == len(named), message  # a line of its own each
    if fault is not empty_folder:
        assert SKIP_HINT in message
    assert file_hashes(results) == before


@pytest.mark.parametrize('script', SCRIPTS)
def test_skip_bad_images_goes_on_and_says_how_many(script, workspace, capsys):
    root, results = workspace
    named = several(*fault_dirs(root, script))
    MAINS[script](run_argv(script, root, results, '--skip_bad_images', 'True'))
    assert f'skipped {len(named)} ' in capsys.readouterr().out
    folder = run_folder_of(results)
    if script == 'train':
        assert sound_checkpoints(folder) == [2, 3]
    else:
        assert json.loads((folder / script / 'testA' / 'summary.json').read_text())['n_images'] == 5 - 3


def _convert(path, mode):
    """Re-save ``path`` in PIL ``mode`` ('I;16': 16-bit gray), keeping its look."""
    gray = np.asarray(Image.open(path).convert('L'))
    if mode == 'I;16':
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    elif mode == 'P':
        image = Image.open(path).convert('RGB').convert('P', palette=Image.ADAPTIVE)
    else:
        image = Image.open(path).convert(mode)
    image.save(path)
    assert Image.open(path).mode == mode


MODES = ('L', 'RGBA', 'I;16', 'P')


@pytest.mark.parametrize('script', SCRIPTS)
def test_gray_rgba_16bit_and_palette_images_are_converted_not_rejected(script, workspace):
    root, results = workspace
    images, labels = fault_dirs(root, script)
    for index, path in enumerate(sorted(images.glob('*.png'))):
        _convert(path, MODES[index % len(MODES)])
        if labels:
            _convert(_label(images, labels, index), ('I;16', 'P')[index % 2])
    MAINS[script](run_argv(script, root, results))
    folder = run_folder_of(results)
    if script == 'train':
        assert sound_checkpoints(folder) == [2, 3]
    else:
        assert json.loads((folder / script / 'testA' / 'summary.json').read_text())['n_images'] == 5


@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('flag', ['--dataroot', '--dataset'])
def test_wrong_dataroot_or_unknown_dataset_names_the_path_and_the_flag(script, flag, workspace):
    root, results = workspace
    value = str(root.parent / 'no_such_root') if flag == '--dataroot' else 'ISIC'
    before = file_hashes(results)
    message = error_of(script, run_argv(script, root, results, flag, value))
    assert value in message and flag in message
    assert file_hashes(results) == before


@pytest.mark.parametrize('script', ['train', 'test'])
def test_a_checkpoint_of_another_architecture_is_refused_naming_it(script, workspace, tmp_path):
    root, results = workspace
    checkpoint = run_folder_of(results) / 'checkpoints' / 'iter_0000002.pt'
    before = file_hashes(results)
    if script == 'train':
        message = error_of('train', run_argv('train', root, results, '--img_size', 64))
        assert '--img_size 32 (checkpoint) vs 64 (now)' in message
    else:
        # Its record says ch 8, its tensors are ch 4: an edited file, or one of another code version.
        state = torch.load(checkpoint, weights_only=False)
        state['architecture']['ch'] = 8
        checkpoint = tmp_path / 'mislabelled.pt'
        torch.save(state, checkpoint)
        message = error_of('test', run_argv('test', root, results, '--weights', checkpoint, '--name', 'other'))
        assert 'another architecture' in message and 'G_AB' in message
    assert str(checkpoint) in message and '\n' not in message
    assert file_hashes(results) == before


# ---- the preparation tools ---------------------------------------------------------------------------

def isic_source(folder, n=6, seed=0):
    """``folder``/images and /masks with ``n`` ISIC-like pairs: noisy skin, one dark elliptical lesion."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:72, :96]
    for sub in ('images', 'masks'):
        (folder / sub).mkdir(parents=True)
    for i in range(n):
        mask = ((yy - rng.uniform(25, 47)) / 13) ** 2 + ((xx - rng.uniform(29, 67)) / 17) ** 2 <= 1
        image = np.array([205, 160, 140]) + rng.normal(0, 4, (72, 96, 3))
        image[mask] = [100, 60, 50]
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / 'images' / f'ISIC_{i:07d}.jpg', quality=95)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / 'masks' / f'ISIC_{i:07d}_segmentation.png')
    return folder / 'images', folder / 'masks'


ISIC_FLAGS = ['--size', '32', '--n_val', '1', '--n_testA', '1', '--n_testB', '1', '--n_a', '1', '--n_b', '5']


def isic_argv(images, masks, out, *extra):
    return ['--images', str(images), '--masks', str(masks), '--out', str(out), *ISIC_FLAGS, *map(str, extra)]


def brats_source(folder, n=3):
    """``folder`` with ``n`` BraTS 2018-2021 subjects (32x32x12 FLAIR + seg): z 5-8 hold a 48 px tumour."""
    rng = np.random.default_rng(0)
    for i in range(n):
        image = np.zeros((32, 32, 12), np.float32)
        image[4:28, 4:28, 2:] = rng.uniform(100, 500, (24, 24, 10))
        seg = np.zeros(image.shape, np.uint8)
        seg[5:11, 20:28, 5:9] = 1
        subject = folder / f'Brats18_T_{i}'
        subject.mkdir(parents=True)
        for kind, volume in (('flair', image), ('seg', seg)):
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(subject / f'{subject.name}_{kind}.nii.gz'))
    return folder


BRATS_FLAGS = ['--min_lesion_px', '20', '--size', '32', '--n_val', '1', '--n_test', '1']


def test_prepare_isic_lists_every_bad_pair_at_once(tmp_path):
    images, masks = isic_source(tmp_path / 'src')
    (masks / 'ISIC_0000000_segmentation.png').unlink()
    (images / 'ISIC_0000009.jpg').write_text('<html>404 Not Found</html>')
    (masks / 'ISIC_0000009_segmentation.png').write_bytes((masks / 'ISIC_0000001_segmentation.png').read_bytes())
    Image.new('L', (50, 50)).save(masks / 'ISIC_0000002_segmentation.png')
    with pytest.raises(SystemExit) as info:  # what the file headers tell, before anything is decoded
        prepare_isic.main(isic_argv(images, masks, tmp_path / 'out'))
    lines = info.value.code.splitlines()
    assert lines[0] == 'error: 3 problems found:'
    for line, path in zip(lines[1:], ('ISIC_0000000.jpg', 'ISIC_0000002_segmentation.png', 'ISIC_0000009.jpg')):
        assert path in line
    assert not (tmp_path / 'out' / 'ISIC').exists()

    images, masks = isic_source(tmp_path / 'src2')
    for index in (3, 4):  # headers fine, data cut short: found when decoded, then all of them
        path = images / f'ISIC_000000{index}.jpg'
        path.write_bytes(path.read_bytes()[:-600])
    with pytest.raises(SystemExit) as info:
        prepare_isic.main(isic_argv(images, masks, tmp_path / 'out', '--n_b', 10))
    lines = info.value.code.splitlines()
    assert lines[0] == 'error: 2 problems found:' and 'ISIC_0000003.jpg' in lines[1] and 'ISIC_0000004.jpg' in lines[2]
    assert os.listdir(tmp_path / 'out' / 'ISIC') == []


def test_prepare_isic_converts_gray_rgba_16bit_and_palette_images(tmp_path):
    images, masks = isic_source(tmp_path / 'src')
    for index, mode in enumerate(MODES):
        jpg = images / f'ISIC_000000{index}.jpg'
        Image.open(jpg).save(jpg.with_suffix('.png'))
        jpg.unlink()
        _convert(jpg.with_suffix('.png'), mode)
        _convert(masks / f'ISIC_000000{index}_segmentation.png', ('P', 'I;16')[index % 2])
    prepare_isic.main(isic_argv(images, masks, tmp_path / 'out', '--n_b', 10))
    assert os.listdir(tmp_path / 'out' / 'ISIC') == ['isic_1']


def test_prepare_brats_lists_every_bad_subject_at_once(tmp_path):
    src = brats_source(tmp_path / 'src', n=5)
    for i in (1, 2):
        (src / f'Brats18_T_{i}' / f'Brats18_T_{i}_seg.nii.gz').unlink()
    with pytest.raises(SystemExit) as info:
        prepare_brats.main(['--src', str(src), '--out', str(tmp_path / 'out'), *BRATS_FLAGS])
    lines = info.value.code.splitlines()
    assert lines[0] == 'error: 2 problems found:'
    assert 'Brats18_T_1_seg' in lines[1] and 'Brats18_T_2_seg' in lines[2]

    src = brats_source(tmp_path / 'src2', n=5)
    for i in (3, 4):
        flair = src / f'Brats18_T_{i}' / f'Brats18_T_{i}_flair.nii.gz'
        flair.write_bytes(flair.read_bytes()[:300])
    with pytest.raises(SystemExit) as info:
        prepare_brats.main(['--src', str(src), '--out', str(tmp_path / 'out'), *BRATS_FLAGS])
    lines = info.value.code.splitlines()
    assert lines[0] == 'error: 2 problems found:'
    assert 'Brats18_T_3_flair' in lines[1] and 'Brats18_T_4_flair' in lines[2]


@pytest.mark.parametrize('tool', ['isic', 'brats'])
def test_a_failed_prepare_keeps_the_earlier_dataset(tool, tmp_path):
    out = tmp_path / 'out'
    if tool == 'isic':
        images, masks = isic_source(tmp_path / 'src')
        main, argv, dataset = prepare_isic.main, isic_argv(images, masks, out, '--overwrite'), 'ISIC'
        broken = masks / 'ISIC_0000003_segmentation.png'
    else:
        src = brats_source(tmp_path / 'src')
        main, dataset = prepare_brats.main, 'BraTS'
        argv = ['--src', str(src), '--out', str(out), *BRATS_FLAGS, '--overwrite']
        broken = src / 'Brats18_T_1' / 'Brats18_T_1_seg.nii.gz'
    main(argv)
    before = file_hashes(out)
    broken.unlink()
    with pytest.raises(SystemExit, match=re.escape(broken.name.split('_seg')[0])):
        main(argv)
    assert file_hashes(out) == before and os.listdir(out / dataset) == [f'{tool}_1']


# ---- the real command lines: exit status and stderr ----------------------------------------------------

@pytest.mark.slow
def test_command_lines_exit_1_with_error_lines_and_no_traceback(workspace, tmp_path):
    """The two ways the scripts end, from a real interpreter: ``sys.exit(main())`` (train.py, test.py) and
    a bare ``main()`` (crf.py, tools/prepare_*.py). Every script's messages are checked in-process above;
    each start costs seconds here, so one script of each way, started together."""
    root, results = workspace
    bad_A = several(*fault_dirs(root, 'train'))
    images, masks = isic_source(tmp_path / 'isic')
    no_masks = [images / f'ISIC_000000{i}.jpg' for i in (1, 2)]
    for image in no_masks:
        (masks / f'{image.stem}_segmentation.png').unlink()
    # (command, paths stderr must name, its number of lines: a count, one per problem, the hint)
    cases = {
        'train': (['train.py', *run_argv('train', root, results)], bad_A, 1 + len(bad_A) + 1),
        'prepare_isic': (['-m', 'tools.prepare_isic', *isic_argv(images, masks, tmp_path / 'out')], no_masks, 3),
    }
    env = dict(os.environ, OMP_NUM_THREADS='1')
    running = {name: subprocess.Popen([sys.executable, *map(str, command)], cwd=REPO_ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, (command, _, _) in cases.items()}
    for name, process in running.items():
        _, stderr = process.communicate(timeout=120)
        _, named, n_lines = cases[name]
        lines = stderr.strip().splitlines()
        assert process.returncode == 1 and 'Traceback' not in stderr, (name, stderr)
        assert lines[0].startswith('error: ') and len(lines) == n_lines, (name, stderr)
        for path in named:
            assert str(path) in stderr, (name, path, stderr)


# ---- crash safety --------------------------------------------------------------------------------------

def _started(script, argv, log, **popen_kwargs):
    """``script``.py in a fresh interpreter (a real process to kill), printing to ``log``. Not a fork of this
    process: a fork copies whatever lock another thread of pytest holds at that moment (the import lock,
    a visdom sender's), and the copy or the fork itself can then wait on it forever."""
    with open(log, 'w') as handle:
        return subprocess.Popen([sys.executable, f'{script}.py', *map(str, argv)], cwd=REPO_ROOT, stdout=handle,
                                stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS='1'),
                                **popen_kwargs)


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_whole_checkpoints_and_resume_finishes(tiny_argv, run_folder, tmp_path):
    argv = tiny_argv('--iteration', 40, '--save_freq', 1, '--resume', 'True')
    folder = run_folder()
    last = 0
    for seed in (1, 2, 3, 4):
        log = tmp_path / f'run{seed}.log'
        process = _started('train', argv, log)
        # Killed at a random moment after it saved a new checkpoint, often while writing the next.
        assert wait_until(lambda: os.path.exists(os.path.join(folder, 'checkpoints', f'iter_{last + 1:07d}.pt')),
                          timeout_s=60)
        time.sleep(random.Random(seed).uniform(0, 0.4))
        process.kill()
        process.wait(timeout=60)
        text = log.read_text()
        assert (f'iter_{last:07d}.pt (step {last})' if last else 'starting from step 1') in text
        steps = sound_checkpoints(folder)
        assert steps == list(range(1, steps[-1] + 1))
        # Whatever the kill interrupted is at most a hidden temp file, never a checkpoint-named one.
        assert all(name.startswith('.') and name.endswith('.tmp')
                   for name in os.listdir(os.path.join(folder, 'checkpoints')) if not name.startswith('iter_'))
        last = steps[-1]
    assert train.main(argv) == 0
    assert sound_checkpoints(folder) == list(range(1, 41))
    assert logged_steps(folder) == list(range(1, 41))


def _workers(pid):
    """The DataLoader workers of ``pid``: children with its command line (what ``pkill -f`` also matches)."""
    with open(f'/proc/{pid}/cmdline', 'rb') as handle:
        command = handle.read()
    found = []
    for entry in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{entry}/stat') as stat, open(f'/proc/{entry}/cmdline', 'rb') as cmdline:
                parent = int(stat.read().rsplit(')', 1)[1].split()[1])
                if parent == pid and cmdline.read() == command:
                    found.append(int(entry))
        except OSError:  # gone meanwhile
            continue
    return found


@pytest.mark.slow
def test_sigterm_to_the_process_and_its_loader_workers_saves_and_exits_cleanly(tiny_argv, run_folder, tmp_path):
    """``pkill -f train.py``: the workers die with the training process; it still saves and exits as asked."""
    argv = tiny_argv('--iteration', 1000, '--save_freq', 1000, '--display_freq', 1, '--num_workers', 1)
    folder = run_folder()
    log = tmp_path / 'run.log'
    process = _started('train', argv, log)
    assert wait_until(lambda: os.path.exists(os.path.join(folder, 'loss_log.csv'))
                      and len(logged_steps(folder)) >= 3, timeout_s=60)
    workers = _workers(process.pid)
    assert len(workers) == 2  # one per loader
    for pid in [process.pid, *workers]:
        os.kill(pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    text = log.read_text()
    assert 'Traceback' not in text and 'exited unexpectedly' not in text, text[-3000:]
    stopped_at = int(re.search(r'stopped by signal 15 at step (\d+); checkpoint saved', text).group(1))
    assert sound_checkpoints(folder) == [stopped_at] and logged_steps(folder) == list(range(1, stopped_at + 1))


def test_loader_workers_gone_while_waiting_for_a_batch_saves_the_last_completed_step(tiny_argv, run_folder,
                                                                                     monkeypatch, capsys):
    """The other order: the signal arrives while the process waits for a batch, and its workers are gone
    (what torch reports from next() then); the step never started, the one before is saved."""
    real_make_loader = train.make_loader

    def make_loader(*args, **kwargs):
        batches = real_make_loader(*args, **kwargs)

        def until_killed():
            for fetched in range(1, 3):
                yield next(batches)
            os.kill(os.getpid(), signal.SIGTERM)
            raise RuntimeError('DataLoader worker (pid(s) 4242) exited unexpectedly')
        return until_killed()
    monkeypatch.setattr(train, 'make_loader', make_loader)
    assert train.main(tiny_argv('--iteration', 4, '--save_freq', 4)) == 128 + signal.SIGTERM
    assert 'stopped by signal 15 at step 2; checkpoint saved' in capsys.readouterr().out
    assert sound_checkpoints(run_folder()) == [2] and logged_steps(run_folder()) == [1, 2]
    monkeypatch.undo()
    assert train.main(tiny_argv('--iteration', 4, '--save_freq', 4, '--resume', 'True')) == 0
    assert sound_checkpoints(run_folder()) == [2, 4] and logged_steps(run_folder()) == [1, 2, 3, 4]


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_saves_at_the_current_step(signum, tiny_argv, run_folder, monkeypatch, capsys):
    real_set_learning_rate = CLTNetModel.set_learning_rate

    def set_learning_rate(model, step):
        if step == 2:
            os.kill(os.getpid(), signum)
        real_set_learning_rate(model, step)
    monkeypatch.setattr(CLTNetModel, 'set_learning_rate', set_learning_rate)
    assert train.main(tiny_argv('--iteration', 4, '--save_freq', 4)) == 128 + signum
    assert f'stopped by signal {int(signum)} at step 2; checkpoint saved' in capsys.readouterr().out
    assert sound_checkpoints(run_folder()) == [2] and logged_steps(run_folder()) == [1, 2]


# ---- numerical faults ----------------------------------------------------------------------------------

@pytest.mark.parametrize('fault', ['nan loss', 'nan weight', 'huge lr'])
def test_non_finite_values_stop_training_naming_what_and_when(fault, tiny_argv, run_folder, monkeypatch):
    real_step = CLTNetModel.optimize_parameters
    calls = []

    def optimize_parameters(model):
        real_step(model)
        calls.append(1)
        if len(calls) == 3 and fault == 'nan loss':
            model.loss_G_cycle = torch.tensor(float('nan'))
        if len(calls) == 3 and fault == 'nan weight':  # e.g. a NaN gradient under a finite loss
            next(model.G_AB.parameters()).data.fill_(float('nan'))
    monkeypatch.setattr(CLTNetModel, 'optimize_parameters', optimize_parameters)
    lr = ('--lr', 1e6) if fault == 'huge lr' else ()
    with pytest.raises(SystemExit) as info:
        train.main(tiny_argv('--iteration', 6, '--save_freq', 1, '--display_freq', 5, *lr))
    message = info.value.code
    expected = {'nan loss': r'loss G_cycle became nan at step 3;', 'nan weight': r'weight G_AB\.\S+ became non-finite '
                r'at step 3;', 'huge lr': r'loss \w+ became nan at step (\d+);'}[fault]
    match = re.search(expected, message)
    assert match and '--lr' in message and '\n' not in message, message
    failed_at = int(match.group(1)) if fault == 'huge lr' else 3
    assert sound_checkpoints(run_folder()) == list(range(1, failed_at))


def test_an_lr_beyond_float32_is_refused_by_the_parser(tiny_argv, capsys):
    assert 'error: --lr must be positive and at most 3.403e+38' in usage_error(capsys, TrainOptions().parse,
                                                                                tiny_argv('--lr', 1e39))


def test_detect_anomaly_runs(tiny_argv, run_folder):
    try:
        assert train.main(tiny_argv('--iteration', 2, '--detect_anomaly', 'True')) == 0
        assert torch.is_anomaly_enabled()
    finally:
        torch.autograd.set_detect_anomaly(False)
    assert sound_checkpoints(run_folder()) == [2]


# ---- visdom outage -------------------------------------------------------------------------------------

def _hung_server(port):
    """A socket on ``port`` that takes connections and never answers: a server hung, or a host away."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', port))
    sock.listen(64)
    return sock


@pytest.mark.slow
def test_visdom_outage_neither_stops_nor_stalls_training_and_plots_resume(tiny_argv, run_folder, visdom_server,
                                                                         monkeypatch):
    """Server stopped at step 3, a hung one on its port until step 7 (a refused connection fails fast
    anyway; an unanswered one is what would stall a blocking sender), then a fresh server."""
    real_step = CLTNetModel.optimize_parameters
    marks, servers, hung, back = [], [visdom_server], [], []  # marks: (step reached, step begun)
    env, group = 'outage', list(CLTNetModel.loss_groups)[-1]

    def optimize_parameters(model):
        reached, step = time.monotonic(), len(marks) + 1
        if step == 3:
            visdom_server.stop()
            hung.append(_hung_server(visdom_server.port))
        if step == 7:  # back, empty: the windows must be made again
            hung.pop().close()
            servers.append(VisdomServer(visdom_server.port, visdom_server.env_path + '_restarted'))
            servers[-1].start()
        if step == 8:  # training goes on meanwhile: the plots reach the new server while it runs
            back.append(bool(wait_until(lambda: traces(servers[-1], group, env), timeout_s=20)))
        marks.append((reached, time.monotonic()))
        real_step(model)
    monkeypatch.setattr(CLTNetModel, 'optimize_parameters', optimize_parameters)
    try:
        assert train.main(tiny_argv('--iteration', 9, '--display_id', 1, '--display_server', 'http://127.0.0.1',
                                    '--display_port', visdom_server.port, '--display_env', env,
                                    '--display_freq', 1, '--print_freq', 3)) == 0
        # Steps 3 to 6 (with their loss flushes and plots) begin and end while nothing answers.
        offline_steps = [marks[step][0] - marks[step - 1][1] for step in range(3, 7)]
        assert max(offline_steps) < 1.0, offline_steps  # a blocking send would wait out its 1 s + 3 s timeouts
        assert back == [True]
        assert wait_until(lambda: 9.0 in traces(servers[-1], group, env).get('G_total', ([],))[0], timeout_s=20)
        window = servers[-1].window(Visualizer.loss_window(group), env)
        assert [trace['name'] for trace in window['content']['data']] == CLTNetModel.loss_groups[group]
    finally:
        for sock in hung:
            sock.close()
        if len(servers) > 1:
            servers[-1].stop()
    assert logged_steps(run_folder()) == list(range(1, 10))


# ---- unwritable or full result folders -----------------------------------------------------------------

@pytest.mark.parametrize('script', [*SCRIPTS, 'pseudo'])
def test_result_dir_below_a_file_is_refused_before_anything_runs(script, workspace):
    root, results = workspace
    blocker = results.parent / 'notes.txt'
    blocker.write_text('a file, not a folder')
    message = error_of(script, run_argv(script, root, blocker / 'results'))
    assert str(blocker) in message and 'not a folder' in message and '--result_dir' in message
    assert '\n' not in message and blocker.read_text() == 'a file, not a folder'


def _read_only_prefix(folder):
    """A command prefix that runs its command with ``folder`` read-only: a private read-only tmpfs mounted
    on it in a new mount namespace (root writes through any chmod, not through a read-only mount; a user
    gets the namespace as root of a user namespace), else, for a user without namespaces, chmod 555.
    Skips the test as root where no mount namespace can be made."""
    namespace = ['unshare', '--mount'] + ([] if os.geteuid() == 0 else ['--map-root-user'])
    mounted = namespace + ['sh', '-c', 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(folder)]
    probe = subprocess.run(mounted + ['true'], capture_output=True, text=True) if shutil.which('unshare') else None
    if probe and probe.returncode == 0:
        return mounted
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    pytest.skip('root writes through chmod 555 and no read-only mount can be made here: '
                + (probe.stderr.strip() if probe else 'no unshare command'))


@pytest.mark.slow
def test_read_only_result_dir_is_refused_before_anything_runs(workspace):
    """Each script started on a --result_dir below a read-only folder, the three together (a start costs
    seconds): exit 1 with one error line, and nothing written."""
    root, results = workspace
    read_only = results.parent / 'read_only'
    read_only.mkdir()
    prefix = _read_only_prefix(read_only)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    running = {script: subprocess.Popen([*prefix, sys.executable, f'{script}.py',
                                         *run_argv(script, root, read_only / 'results')], cwd=REPO_ROOT, env=env,
                                        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for script in SCRIPTS}
    for script, process in running.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 1 and stderr.count('\n') == 1, (script, stderr)
        assert stderr.startswith(f'error: cannot write in {read_only} (') and 'writable --result_dir' in stderr, \
            (script, stderr)
    assert os.listdir(read_only) == []


DiskUsage = namedtuple('DiskUsage', 'total used free')


@pytest.mark.parametrize('script', SCRIPTS)
def test_a_nearly_full_disk_is_refused_before_anything_is_written(script, workspace, monkeypatch):
    root, results = workspace
    before = file_hashes(results)
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: DiskUsage(2 ** 30, 2 ** 30 - 2 ** 20, 2 ** 20))
    message = error_of(script, run_argv(script, root, results))
    assert 'only 1.0 MB free' in message and '--result_dir' in message and '\n' not in message
    assert file_hashes(results) == before


def test_training_needs_room_for_one_checkpoint_as_estimated(baseline, tmp_path, monkeypatch):
    root, results = baseline
    opt = TrainOptions().parse(run_argv('train', root, results))
    estimate = checkpoint_bytes(create_model(opt))
    actual = os.path.getsize(run_folder_of(results) / 'checkpoints' / 'iter_0000002.pt')
    assert 0.8 * actual < estimate < 1.25 * actual
    free = MIN_FREE_BYTES + estimate // 2  # enough for the logs, not for a checkpoint
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: DiskUsage(2 ** 40, 2 ** 40 - free, free))
    message = error_of('train', run_argv('train', root, tmp_path / 'results'))
    assert 'a checkpoint and the logs need about' in message and not (tmp_path / 'results').exists()


def test_a_disk_filling_up_while_saving_stops_with_one_line_and_keeps_earlier_checkpoints(tiny_argv, run_folder,
                                                                                          monkeypatch):
    real_save, saves = torch.save, []

    def save(obj, handle, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            handle.write(b'half a checkpoint')
            raise OSError(errno.ENOSPC, 'No space left on device')
        real_save(obj, handle, *args, **kwargs)
    monkeypatch.setattr(base_model.torch, 'save', save)
    message = error_of('train', tiny_argv('--iteration', 3, '--save_freq', 1))
    path = os.path.join(run_folder(), 'checkpoints', 'iter_0000002.pt')
    assert f'cannot write {path} (No space left on device)' in message and '--resume True' in message
    assert sound_checkpoints(run_folder()) == [1]
    assert os.listdir(os.path.dirname(path)) == ['iter_0000001.pt']  # the temp file is gone too


def test_the_zip_writer_s_full_disk_error_is_one_line_naming_the_file_and_the_space_left(tiny_argv, run_folder,
                                                                                          monkeypatch):
    """torch's zip writer reports the OSError of a failed write as a RuntimeError of its own."""
    def save(obj, handle, *args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, 'No space left on device')
        except OSError:
            raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598')
    monkeypatch.setattr(base_model.torch, 'save', save)
    message = error_of('train', tiny_argv('--iteration', 1))
    path = os.path.join(run_folder(), 'checkpoints', 'iter_0000001.pt')
    assert re.fullmatch(rf'error: cannot write {re.escape(path)} \(No space left on device\); \d+\.\d MB free on '
                        r'its disk: free some space, then continue with --resume True', message), message
    assert os.listdir(os.path.dirname(path)) == []


# ---- a disk that really fills up (a private tmpfs) -------------------------------------------------------

# Run by ``unshare -m``: mounts a tmpfs of SIZE on MOUNT_POINT (seen by this process alone), links the run's
# inputs into it, runs SCRIPT's main without its start-up room check (the disk fills up after it), and prints
# the exit code and the files left on the tmpfs.
FULL_DISK_DRIVER = '''
import json, os, subprocess, sys
mount_point, size, script, argv, links = json.loads(sys.argv[1])
subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', mount_point], check=True)
for link, target in links:
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(target, link)
module = __import__(script)
module.check_output_dir = lambda *args, **kwargs: None
try:
    module.main(argv)
    code = 0
except SystemExit as stop:
    code = stop.code
files = [os.path.relpath(os.path.join(d, n), mount_point) for d, _, names in os.walk(mount_point) for n in names]
print(json.dumps({'code': code, 'files': files}))
'''


@pytest.fixture(scope='session')
def private_tmpfs(tmp_path_factory):
    """Skips unless this process may mount a tmpfs in a mount namespace of its own (root with unshare)."""
    probe = tmp_path_factory.mktemp('tmpfs_probe')
    if os.geteuid() != 0 or shutil.which('unshare') is None or subprocess.run(
            ['unshare', '-m', 'mount', '-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', str(probe)],
            capture_output=True).returncode != 0:
        pytest.skip('a private tmpfs needs root and unshare -m; the simulated full disks above check the same lines')


# script -> (tmpfs size, the baseline run's folders its inputs are linked from, the file the disk has no room
# for: a checkpoint (through torch's zip writer) or a PNG, the advice of its line)
FULL_DISK_CASES = {'train': ('64k', [], 'checkpoints/iter_0000001.pt', 'continue with --resume True'),
                   'test': ('16k', ['checkpoints'], 'test/val/overlays/val_0000.png', 'run test.py again'),
                   'crf': ('8k', ['test'], 'crf/val/masks/val_0000.png', 'run crf.py again')}


@pytest.mark.slow
@pytest.mark.parametrize('script', SCRIPTS)
def test_a_disk_filling_up_mid_run_stops_with_one_line_and_leaves_no_partial_file(script, private_tmpfs, workspace,
                                                                                  tmp_path):
    root, results = workspace
    mount_point = tmp_path / 'small_disk'
    mount_point.mkdir()
    size, linked, unwritten, then = FULL_DISK_CASES[script]
    fresh = ['--resume', 'False'] if script == 'train' else []
    argv = run_argv(script, root, mount_point / 'results', *fresh)
    folder = run_folder_of(mount_point / 'results')
    links = [(str(folder / name), str(run_folder_of(results) / name)) for name in linked]
    done = subprocess.run(['unshare', '-m', sys.executable, '-c', FULL_DISK_DRIVER,
                           json.dumps([str(mount_point), size, script, argv, links])],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    report = json.loads(done.stdout.splitlines()[-1])
    line = (rf'error: cannot write {re.escape(str(folder / unwritten))} \(No space left on device\); \d+\.\d MB '
            rf'free on its disk: free some space, then {re.escape(then)}')
    assert re.fullmatch(line, str(report['code'])), (report, done.stderr[-3000:])
    assert 'Traceback' not in done.stderr, done.stderr[-3000:]
    written = [os.path.relpath(mount_point / name, folder) for name in report['files']]
    assert unwritten not in written and not [name for name in written if name.endswith('.tmp')]
    assert LOCK_NAME not in written  # released


# ---- one owner per run folder --------------------------------------------------------------------------

def _in_use(folder, lock_path):
    """The line a script stops with on a run folder whose lock file is ``lock_path``."""
    with open(lock_path) as handle:
        owner = json.load(handle)
    return (f"error: {folder} is in use by {owner['script']} (pid {owner['pid']} on {owner['host']}, since "
            f"{owner['since']}); wait for it to finish or stop it, or pass another --name")


@pytest.mark.slow
def test_a_second_train_py_on_a_run_in_use_is_refused_and_a_killed_owner_s_lock_is_taken_over(tiny_argv, run_folder,
                                                                                                tmp_path, capsys):
    folder = run_folder()
    lock_path = os.path.join(folder, LOCK_NAME)
    first = _started('train', tiny_argv('--iteration', 1000, '--save_freq', 1000), tmp_path / 'first.log')
    try:
        assert wait_until(lambda: os.path.exists(lock_path) and os.path.getsize(lock_path) > 0, timeout_s=60)
        owner_line = _in_use(folder, lock_path)
        assert f'in use by train.py (pid {first.pid} ' in owner_line
        assert error_of('train', tiny_argv('--iteration', 2)) == owner_line
    finally:
        first.kill()
        first.wait(timeout=60)
    left = owner_line.split(' is in use by ', 1)[1].split(';', 1)[0]
    assert train.main(tiny_argv('--iteration', 2, '--resume', 'True')) == 0
    assert f'note: {lock_path} was left by {left}, which is no longer running; taken over' in capsys.readouterr().out
    assert sound_checkpoints(folder) == [2] and not os.path.exists(lock_path)


@pytest.mark.parametrize('script', [*SCRIPTS, 'pseudo'])
def test_every_script_refuses_a_run_folder_another_process_holds(script, workspace):
    root, results = workspace
    folder = run_folder_of(results)
    with RunLock(str(folder), 'train.py') as lock:
        before = file_hashes(results)
        assert error_of(script, run_argv(script, root, results)) == _in_use(folder, lock.path)
        assert file_hashes(results) == before
    assert not os.path.exists(lock.path)


def test_a_fresh_run_over_an_earlier_run_s_checkpoints_is_refused_unless_overwrite(workspace, capsys):
    root, results = workspace
    folder = run_folder_of(results)
    before = file_hashes(results)
    message = error_of('train', run_argv('train', root, results, '--resume', 'False'))
    assert message == (f'error: {folder}/checkpoints holds 1 checkpoint(s) of an earlier run (last step 2); continue '
                       f'it with --resume True, start it again with --overwrite True (deletes them), or pass another '
                       f'--name')
    assert file_hashes(results) == before
    assert train.main(run_argv('train', root, results, '--resume', 'False', '--overwrite', 'True')) == 0
    assert (f'--overwrite True: deleted the 1 checkpoint(s), loss log and samples of the earlier run in {folder}'
            in capsys.readouterr().out)
    assert sound_checkpoints(folder) == [1, 2, 3] and logged_steps(folder) == [1, 2, 3]


# ---- names and numbers, refused at parse time ----------------------------------------------------------

PARSERS = {'train': TrainOptions, 'test': TestOptions, 'crf': CRFOptions, 'pseudo': PseudoOptions}


def parse_error(script, argv, capsys):
    """The message of the one error line ``script``'s parser stops with (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        PARSERS[script]().parse(argv)
    assert info.value.code == 2
    return capsys.readouterr().err.splitlines()[-1].split(': error: ', 1)[1]


def _tree(folder):
    return sorted(os.path.join(d, name) for d, dirs, files in os.walk(folder) for name in dirs + files)


@pytest.mark.parametrize('script', [*SCRIPTS, 'pseudo'])
@pytest.mark.parametrize('name', ['../../x', '../../../escaped', 'ABSOLUTE', '', '.', '..', 'a/b', 'a\\b'])
def test_a_run_name_that_is_not_one_folder_name_is_refused(script, name, baseline, capsys):
    root, results = baseline
    name = str(root.parent / 'escaped') if name == 'ABSOLUTE' else name
    before = _tree(root.parent.parent)
    with pytest.raises(SystemExit):
        MAINS[script](run_argv(script, root, results, '--name', name))
    assert _tree(root.parent.parent) == before
    assert parse_error(script, run_argv(script, root, results, '--name', name), capsys) == (
        f"--name must be one folder name, without / or \\ and not '', '.' or '..' (the run folder is "
        f"<result_dir>/<dataset>/<folder>/<name>), got {name!r}")


BAD_NUMBERS = [
    ('train', ['--ch', '0'], '--ch must be at least 1, got 0'),
    ('train', ['--ch', '-4'], '--ch must be at least 1, got -4'),
    ('train', ['--img_size', '0'], '--img_size must be at least 16, got 0'),
    ('train', ['--img_size', '-4'], '--img_size must be at least 16, got -4'),
    ('train', ['--n_res', '0'], '--n_res must be at least 1, got 0'),
    ('train', ['--n_dis', '1'], '--n_dis must be at least 2, got 1'),
    ('train', ['--num_workers', '-1'], '--num_workers must be at least 0, got -1'),
    ('train', ['--num_threads', '-1'], '--num_threads must be at least 0, got -1'),
    ('train', ['--seed', '-1'], '--seed must be between 0 and 4294967295, got -1'),
    ('train', ['--seed', '4294967296'], '--seed must be between 0 and 4294967295, got 4294967296'),
    ('train', ['--weight_decay', '-1'], '--weight_decay must be at least 0, got -1.0'),
    ('train', ['--weight_decay', 'nan'], '--weight_decay must be at least 0, got nan'),
    ('train', ['--cam_weight', '-1'], '--cam_weight must be at least 0, got -1.0'),
    ('train', ['--few_weight', 'inf'], '--few_weight must be at least 0, got inf'),
    ('train', ['--save_freq', '0'], '--save_freq must be at least 1, got 0'),
    ('train', ['--display_id', '-1'], '--display_id must be at least 0, got -1'),
    ('train', ['--display_port', '70000'], '--display_port must be between 1 and 65535, got 70000'),
    ('train', ['--pseudo', '../x'], "--pseudo must be one folder name, without / or \\ and not '', '.' or '..' "
                                    "(the run folder is <result_dir>/<dataset>/<folder>/<name>), got '../x'"),
    ('train', ['--resume', 'True', '--overwrite', 'True'],
     '--resume True continues the run, --overwrite True deletes it and starts again: pass one'),
    ('test', ['--batch_size', '0'], '--batch_size must be at least 1, got 0'),
    ('test', ['--img_size', '8'], '--img_size must be at least 16, got 8'),
    ('crf', ['--num_workers', '-2'], '--num_workers must be at least 0, got -2'),
    ('pseudo', ['--crf_workers', '-1'], '--crf_workers must be at least 0, got -1'),
]


@pytest.mark.parametrize('script, flags, expected', BAD_NUMBERS,
                         ids=[f'{script}{"".join(flags)}' for script, flags, _ in BAD_NUMBERS])
def test_a_bad_number_is_refused_at_parse_time_with_one_line(script, flags, expected, baseline, capsys):
    root, results = baseline
    before = _tree(results)
    assert parse_error(script, run_argv(script, root, results, *flags), capsys) == expected
    assert _tree(results) == before


# ---- how processes end: torchrun's store, CRF workers, Ctrl-C ----------------------------------------------

# A torchrun worker that prints the addresses its agent (parent) listens on, from /proc (Linux).
LISTENING_REPORT = '''
import os
parent = os.getppid()
sockets = set()
for fd in os.listdir(f'/proc/{parent}/fd'):
    try:
        target = os.readlink(f'/proc/{parent}/fd/{fd}')
    except FileNotFoundError:  # the launcher closed it since the listing: not a listening socket
        continue
    if target.startswith('socket:['):
        sockets.add(target[len('socket:['):-1])
for table in ('tcp', 'tcp6'):
    with open(f'/proc/net/{table}') as rows:
        for row in rows.read().splitlines()[1:]:
            cells = row.split()
            if cells[3] == '0A' and cells[9] in sockets and os.environ['RANK'] == '0':  # 0A: LISTEN
                print('listening on', cells[1])
'''


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists('/proc/net/tcp'), reason='reads the listening sockets from Linux /proc')
def test_start_train_s_torchrun_listens_on_127_0_0_1_alone(tmp_path):
    worker = tmp_path / 'report.py'
    worker.write_text(LISTENING_REPORT)
    done = subprocess.run([sys.executable, '-m', 'tools.torchrun_local', '--nproc_per_node=2', str(worker)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    addresses = [line.split()[-1] for line in done.stdout.splitlines() if line.startswith('listening on')]
    assert len(addresses) == 1 and addresses[0].startswith('0100007F:'), done.stdout  # 127.0.0.1, little-endian


def _gone(pid):
    """True when process ``pid`` has ended (a zombie nobody reaped counts as ended)."""
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except OSError:
        return True


@pytest.mark.slow
def test_crf_workers_die_with_a_killed_crf_py_and_print_nothing(workspace, tmp_path):
    root, results = workspace
    log = tmp_path / 'crf.log'
    # Mean-field steps enough for seconds per image: the workers are busy when their parent dies.
    crf_py = _started('crf', run_argv('crf', root, results, '--num_workers', 2, '--crf_params', 'n_iter=300000'), log)
    try:
        assert wait_until(lambda: len(_workers(crf_py.pid)) == 2, timeout_s=60), log.read_text()
        workers = _workers(crf_py.pid)
    finally:
        crf_py.kill()
        crf_py.wait(timeout=60)
    assert wait_until(lambda: all(map(_gone, workers)), timeout_s=1.0)
    text = log.read_text()
    assert 'Traceback' not in text and 'Error' not in text, text[-3000:]


def _has_mapped(pid, library):
    try:
        with open(f'/proc/{pid}/maps') as maps:
            return library in maps.read()
    except OSError:
        return False


@pytest.mark.parametrize('script', [*SCRIPTS, 'pseudo'])
def test_ctrl_c_during_start_up_prints_one_line_and_exits_130(script, workspace, tmp_path):
    root, results = workspace
    log = tmp_path / 'run.log'
    for _ in range(5):
        process = _started(script, run_argv(script, root, results), log, start_new_session=True)
        # numpy comes right after the Ctrl-C handler in every script, and torch (seconds) before its main starts;
        # polled every millisecond, since with the files in the page cache torch can follow within 0.1 s.
        assert wait_until(lambda: _has_mapped(process.pid, '_multiarray_umath'), timeout_s=60, interval_s=0.001)
        # Frozen, it is surely still starting up when torch is not loaded yet; a small run can otherwise
        # finish between this check and the signal.
        os.killpg(process.pid, signal.SIGSTOP)
        if process.poll() is None and not _has_mapped(process.pid, 'libtorch'):
            break
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    else:
        pytest.fail(f'{script}.py loaded torch before it could be frozen, 5 times')
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches its whole foreground group
    os.killpg(process.pid, signal.SIGCONT)
    status = process.wait(timeout=60)
    line = f'{script}.py: stopped by Ctrl-C; every file written so far is complete\n'
    assert (status, log.read_text()) == (130, line)
