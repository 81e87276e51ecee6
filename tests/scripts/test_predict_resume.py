"""predict.py stopped (Ctrl-C, a full disk) and run again: the table of what was done, a rerun that continues."""
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import predict
from conftest import REPO_ROOT
from refinement.predictor import Predictor

WEIGHTS = os.path.join(REPO_ROOT, 'weights', 'ISIC.pt')
FAST = ['--device', 'cpu', '--num_threads', '1', '--num_workers', '0', '--crf_workers', '1', '--amp', 'off',
        '--batch_size', '1']
NAMES = ('a', 'b', 'c')


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        image = np.full((48, 48, 3), (205.0, 160.0, 140.0)) + rng.normal(0, 6, (48, 48, 3))
        image[12:30, 10:26] = (110, 70, 50)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f'{name}.png')
    return folder


def _argv(source, out, *extra):
    return ['--weights', WEIGHTS, '--input', str(source), '--output', str(out), *FAST, *map(str, extra)]


def _counting_decide(monkeypatch, stop_at=None):
    """Count Predictor.decide's batches; the ``stop_at``-th raises KeyboardInterrupt, as Ctrl-C would."""
    calls = []
    decide = Predictor.decide

    def counted(self, images, raws):
        calls.append(len(raws))
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return decide(self, images, raws)
    monkeypatch.setattr(Predictor, 'decide', counted)
    return calls


def _table(out):
    with open(out / 'predictions.csv', newline='') as handle:
        return [os.path.basename(row['file']) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_ctrl_c_writes_the_table_of_the_files_done_and_a_rerun_continues(photos, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    _counting_decide(monkeypatch, stop_at=2)
    with pytest.raises(SystemExit) as info:
        predict.main(_argv(photos, out))
    assert info.value.code == 130
    assert 'predict.py: stopped by Ctrl-C after 1 of 3 files' in capsys.readouterr().err
    assert _table(out) == ['a.png'] and not (out / 'b_mask.png').exists()
    assert json.loads((out / 'predictions_summary.json').read_text())['complete'] is False
    first = (out / 'a_mask.png').stat().st_mtime_ns
    calls = _counting_decide(monkeypatch)
    rows = predict.main(_argv(photos, out))  # no --overwrite: it continues
    assert calls == [1, 1] and [row['status'] for row in rows] == ['ok'] * 3
    assert (out / 'a_mask.png').stat().st_mtime_ns == first and _table(out) == ['a.png', 'b.png', 'c.png']
    assert '1 of 3 files already done' in capsys.readouterr().out
    predict.main(_argv(photos, out, '--save_prob'))  # an output the earlier runs did not write: made now
    assert calls == [1, 1, 1, 1, 1] and all((out / f'{name}_prob.png').exists() for name in NAMES)
    predict.main(_argv(photos, out))
    assert len(calls) == 5 and '3 of 3 files already done' in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        predict.main(_argv(photos, out, '--crf', 'False'))  # another mask rule: not this command's outputs
    assert 'made from another input, weights file or --crf/--largest_3d/--min_brain_frac' in str(info.value.code)
    predict.main(_argv(photos, out, '--overwrite'))
    assert len(calls) == 8


@pytest.mark.slow
def test_a_half_written_file_is_redone_and_a_torn_record_is_ignored(photos, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    predict.main(_argv(photos, out))
    manifest = out / 'predict_manifest.jsonl'
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    key = next(record['key'] for record in records if record['name'] == 'b')
    # Killed while writing b's outputs again, and mid-line after it.
    with open(manifest, 'a') as handle:
        handle.write(json.dumps({'name': 'b', 'key': key, 'state': 'started'}) + '\n{"name": "c", "ke')
    calls = _counting_decide(monkeypatch)
    predict.main(_argv(photos, out))
    assert calls == [1]
    last = json.loads(manifest.read_text().splitlines()[-1])
    assert (last['name'], last['state']) == ('b', 'done')
    labels = tmp_path / 'labels'  # labels given later score the finished masks without predicting again
    labels.mkdir()
    label = np.zeros((48, 48), np.uint8)
    label[12:30, 10:26] = 255
    Image.fromarray(label).save(labels / 'a_segmentation.png')
    rows = predict.main(_argv(photos, out, '--labels', labels))
    assert calls == [1] and 0 < rows[0]['DI'] <= 1 and 'DI' not in rows[1]


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_a_rerun_continues(photos, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    write = predict.write_png_atomic

    def full_at_b(path, array):
        if os.path.basename(path) == 'b_mask.png':
            raise OSError(errno.ENOSPC, 'No space left on device', str(path))
        write(path, array)
    monkeypatch.setattr(predict, 'write_png_atomic', full_at_b)
    with pytest.raises(SystemExit) as info:
        predict.main(_argv(photos, out))
    message = str(info.value.code)
    assert message.startswith(f'error: cannot write {out / "b_mask.png"} (No space left on device); ')
    assert message.endswith('free some space, then run the same command again: the files already done are skipped')
    monkeypatch.setattr(predict, 'write_png_atomic', write)
    calls = _counting_decide(monkeypatch)
    predict.main(_argv(photos, out))
    assert calls == [1, 1] and _table(out) == ['a.png', 'b.png', 'c.png']


def test_an_output_folder_that_cannot_be_written_names_the_output_flag(photos, tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EROFS, 'Read-only file system')
    monkeypatch.setattr('util.preflight.tempfile.TemporaryFile', refused)
    with pytest.raises(SystemExit) as info:
        predict.main(_argv(photos, tmp_path / 'out'))
    assert info.value.code == (f'error: cannot write in {tmp_path} (Read-only file system); pass a writable --output '
                               f'or fix the folder permissions')


@pytest.mark.slow
def test_ctrl_c_on_the_script_exits_130_without_a_traceback(photos, tmp_path):
    out = tmp_path / 'out'
    process = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, 'predict.py'), *_argv(photos, out)],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = out / 'predict_manifest.jsonl'
    while process.poll() is None and not (manifest.exists() and '"done"' in manifest.read_text()):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    if process.returncode == 0:  # it finished all three before the signal came
        pytest.skip('predict.py finished before Ctrl-C')
    assert process.returncode == 130 and 'Traceback' not in stderr, stderr
    assert 'predict.py: stopped by Ctrl-C after ' in stderr and _table(out)
