"""issue 42 F: a truncated or wrong-typed record (test/selection.json, crf/selection.json, steps.json) read by
test.py, crf.py, pseudo.py or tools/export_weights.py stops with one line naming the file and the fix, never a
JSONDecodeError or TypeError traceback; export_weights.py on a full disk gives one line too."""
import argparse
import errno
import json
import os

import pytest

import crf
from conftest import REPO_ROOT, test_script
from pseudo import recorded_choices
from fake_tested_run import TEST_RULE, crf_argv, make_tested_run
from tools import export_weights
from records.record_io import RecordError, file_sha256, read_record

DAMAGED = {
    'truncated': '{"selection": {"map_mode": "attention", "thresh',
    'a list': '[]',
    'no selection': '{"command": "test.py"}',
    'selection a list': '{"selection": []}',
    'threshold a text': json.dumps({'selection': dict(TEST_RULE, threshold='0.3x')}),
    'binarize unknown': json.dumps({'selection': dict(TEST_RULE, binarize='mean')}),
}


def _one_line(info):
    message = str(info.value.code)
    assert message.startswith('error: ') and '\n' not in message
    return message


@pytest.mark.parametrize('text', DAMAGED.values(), ids=DAMAGED.keys())
def test_crf_py_names_a_damaged_test_record_and_the_fix(tmp_path, text):
    root, test_root = make_tested_run(tmp_path)
    (test_root / 'selection.json').write_text(text)
    with pytest.raises(SystemExit) as info:
        crf.main(crf_argv(root, '--crf_params', 'alpha=2,n_iter=5'))
    message = _one_line(info)
    assert str(test_root / 'selection.json') in message and message.endswith('delete it and run test.py again')


def test_read_record_names_the_script_that_writes_the_file(tmp_path):
    for folder, writer in (('test', 'test.py'), ('crf', 'crf.py'), ('pipe', 'pipeline.py')):
        path = tmp_path / folder / ('steps.json' if writer == 'pipeline.py' else 'selection.json')
        path.parent.mkdir()
        path.write_bytes(b'{"trunc')
        with pytest.raises(RecordError) as info:
            read_record(str(path))
        assert str(info.value).startswith(f'{path} is not readable JSON (JSONDecodeError: ')
        assert str(info.value).endswith(f'delete it and run {writer} again')
    assert read_record(str(tmp_path / 'missing.json')) == {}


def test_test_py_writes_its_own_damaged_record_anew(tmp_path, capsys):
    path = tmp_path / 'test' / 'selection.json'
    path.parent.mkdir()
    for text in ('{"key": nul', '{"key": null, "selection": 3}'):
        path.write_text(text)
        assert test_script.earlier_record(str(path)) == {}
        assert capsys.readouterr().out.endswith(': test.py writes it anew\n')


def _pseudo_opt(name='run'):
    return argparse.Namespace(weights=None, crf_params=None, name=name)


@pytest.mark.parametrize('text, problem', [
    ('{"selection": {"crf": {"alpha": 2', 'is not readable JSON'),
    ('{"selection": {"crf": 5}}', "has 'selection' crf 5, expected an object of CRF parameters"),
    ('{"test_record_sha256": "SHA", "selection": {"crf": {"alpha": "big"}}}', 'CRF parameter alpha must be float'),
])
def test_pseudo_py_names_a_damaged_crf_record(tmp_path, text, problem):
    root, test_root = make_tested_run(tmp_path)
    crf_record = test_root.parent / 'crf' / 'selection.json'
    crf_record.parent.mkdir()
    crf_record.write_text(text.replace('SHA', file_sha256(str(test_root / 'selection.json'))))
    with pytest.raises(SystemExit) as info:
        recorded_choices(_pseudo_opt(), str(test_root.parent))
    message = _one_line(info)
    assert str(crf_record) in message and problem in message


def _run_served_from(tmp_path, weights):
    """A run folder whose test.py record chose ``weights`` (a shipped file) and whose crf.py record refines it."""
    run = tmp_path / 'run'
    (run / 'test').mkdir(parents=True)
    (run / 'test' / 'selection.json').write_text(json.dumps({'selection': dict(TEST_RULE, checkpoint=weights)}))
    return run


@pytest.mark.parametrize('text, problem', [
    ('{"steps": {"stage1": ', 'is not readable JSON'), ('[1, 2]', 'holds a JSON list'),
    ('{"steps": []}', "has no 'steps' (dict)")])
def test_export_weights_names_a_damaged_steps_json(tmp_path, text, problem):
    run = _run_served_from(tmp_path, os.path.join(REPO_ROOT, 'weights', 'ISIC_stage1.pt'))
    steps = tmp_path / 'pipe' / 'steps.json'
    steps.parent.mkdir()
    steps.write_text(text)
    with pytest.raises(SystemExit) as info:
        export_weights.main(['--run', str(run), '--out', str(tmp_path / 'w.pt'), '--pipeline', str(steps)])
    message = _one_line(info)
    assert str(steps) in message and problem in message
    assert not (tmp_path / 'w.pt').exists()


def test_export_weights_names_a_damaged_test_record(tmp_path):
    run = _run_served_from(tmp_path, 'x.pt')
    (run / 'test' / 'selection.json').write_text(json.dumps({'selection': dict(TEST_RULE, map_mode=3)}))
    with pytest.raises(SystemExit) as info:
        export_weights.main(['--run', str(run), '--out', str(tmp_path / 'w.pt')])
    assert _one_line(info).endswith("expected a map name: delete it and run test.py again")


def test_export_weights_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    run = _run_served_from(tmp_path, os.path.join(REPO_ROOT, 'weights', 'ISIC_stage1.pt'))
    out = tmp_path / 'w.pt'

    def full_disk(obj, path):
        raise OSError(errno.ENOSPC, 'No space left on device', path)
    monkeypatch.setattr(export_weights, 'atomic_torch_save', full_disk)
    with pytest.raises(SystemExit) as info:
        export_weights.main(['--run', str(run), '--out', str(out)])
    assert _one_line(info).startswith(f'error: cannot write {out} (No space left on device); ')
    assert 'run python -m tools.export_weights again' in str(info.value.code)
