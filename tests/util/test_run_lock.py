"""Tests of util/run_lock.py: one owner per run folder, released on exit, a dead owner's lock taken over."""
import errno
import json
import os
import socket

import pytest

from util.run_lock import LOCK_NAME, RunLock


def _record(path):
    with open(path) as handle:
        return json.load(handle)


def _plant(folder, host, pid=2 ** 22 + 1):
    """A lock file as a process of ``host`` left it (no flock held: that process is gone)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {'script': 'train.py', 'pid': pid, 'host': host, 'since': '2025-01-31 12:00:00'}
    (folder / LOCK_NAME).write_text(json.dumps(record))
    return record


def test_the_lock_names_its_owner_and_goes_with_the_folders_it_made(tmp_path):
    folder = tmp_path / 'results' / 'ISIC' / 'run'
    with RunLock(str(folder), 'test.py') as lock:
        record = _record(lock.path)
        assert (record['script'], record['pid'], record['host']) == ('test.py', os.getpid(), socket.gethostname())
    assert not (tmp_path / 'results').exists()  # made only to hold the lock, and left empty

    (folder / 'test').mkdir(parents=True)
    with RunLock(str(folder), 'test.py'):
        pass
    assert os.listdir(folder) == ['test']


def test_a_held_run_folder_is_refused_naming_the_owner(tmp_path):
    folder = str(tmp_path / 'run')
    with RunLock(folder, 'train.py') as lock:
        record = _record(lock.path)
        with pytest.raises(SystemExit) as info:
            RunLock(folder, 'crf.py').acquire()
        assert _record(lock.path) == record
    assert info.value.code == (f"error: {folder} is in use by train.py (pid {os.getpid()} on {socket.gethostname()}, "
                               f"since {record['since']}); wait for it to finish or stop it, or pass another --name")


def test_the_lock_of_a_process_gone_from_this_host_is_taken_over(tmp_path, capsys):
    planted = _plant(tmp_path / 'run', socket.gethostname())
    with RunLock(str(tmp_path / 'run'), 'crf.py') as lock:
        assert _record(lock.path)['script'] == 'crf.py'
    assert capsys.readouterr().out == (f"note: {lock.path} was left by train.py (pid {planted['pid']} on "
                                       f"{planted['host']}, since {planted['since']}), which is no longer running; "
                                       f"taken over\n")


def test_the_lock_of_another_host_is_refused_with_how_to_clear_it(tmp_path):
    _plant(tmp_path / 'run', 'another-host')
    path = tmp_path / 'run' / LOCK_NAME
    with pytest.raises(SystemExit) as info:
        RunLock(str(tmp_path / 'run'), 'test.py').acquire()
    assert info.value.code == (f'error: {path} names train.py (pid {2 ** 22 + 1} on another-host, since 2025-01-31 '
                               f'12:00:00), another host; if that run has ended, delete {path}, else wait for it or '
                               f'pass another --name')
    assert path.exists()


def test_a_folder_that_cannot_be_written_is_refused_in_one_line(tmp_path, monkeypatch):
    """As on a read-only file system (chmod does not stop root, so the refusal is simulated)."""
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(LOCK_NAME):
            raise OSError(errno.EROFS, 'Read-only file system', path)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, 'open', read_only)
    path = tmp_path / 'run' / LOCK_NAME
    with pytest.raises(SystemExit) as info:
        RunLock(str(tmp_path / 'run'), 'test.py').acquire()
    assert info.value.code == (f'error: cannot write {path} (Read-only file system); pass a writable --result_dir '
                               'or fix the folder permissions')
    monkeypatch.setattr(os, 'open', lambda *args, **kwargs: exec('raise OSError(errno.ENOSPC, "full", "x")'))
    with pytest.raises(OSError) as full:
        RunLock(str(tmp_path / 'run'), 'test.py').acquire()
    assert full.value.errno == errno.ENOSPC  # for the script's own full-disk line (util/full_disk.py)
