"""Tests of util/full_disk.py and the full-disk path of util/atomic.py (a real full disk: test_fault_injection.py)."""
import errno
import shutil
from collections import namedtuple

import pytest

from util.atomic import atomic_write
from util.full_disk import exit_on_full_disk

DiskUsage = namedtuple('DiskUsage', 'total used free')


def _zip_writer_on_a_full_disk(code):
    """A ``write`` that fails as torch.save does on a full disk: its RuntimeError hides the OSError."""
    def write(handle):
        handle.write(b'half a file')
        try:
            raise OSError(code, 'No space left on device')
        except OSError:
            raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598')
    return write


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_behind_any_error_is_an_oserror_naming_the_file_and_nothing_is_left(code, tmp_path):
    path = tmp_path / 'iter_0000002.pt'
    path.write_bytes(b'the earlier file')
    with pytest.raises(OSError) as info:
        atomic_write(path, _zip_writer_on_a_full_disk(code), mode='wb')
    assert (info.value.errno, info.value.filename) == (code, str(path))
    assert path.read_bytes() == b'the earlier file' and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_exit_on_full_disk_gives_one_line_with_the_space_left(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: DiskUsage(2 ** 30, 2 ** 30 - 2 ** 19, 2 ** 19))
    path = tmp_path / 'masks' / 'a.png'
    with pytest.raises(SystemExit) as info, exit_on_full_disk('run test.py again'):
        atomic_write(path, _zip_writer_on_a_full_disk(errno.ENOSPC), mode='wb')
    assert info.value.code == (f'error: cannot write {path} (No space left on device); 0.5 MB free on its disk: '
                               f'free some space, then run test.py again')


def test_other_errors_pass_through_unchanged():
    with pytest.raises(PermissionError), exit_on_full_disk('run test.py again'):
        raise PermissionError(errno.EACCES, 'Permission denied', 'a.png')
