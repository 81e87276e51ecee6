"""Atomic file writes: a reader (or a run killed at any moment) never sees half a file."""
import os
import uuid

from util.full_disk import out_of_space


def atomic_write(path, write, mode='w', **open_kwargs):
    """Call ``write(handle)`` on a hidden temp file beside ``path``, fsync, then rename it onto ``path``.

    The temp file is opened with ``'x'`` under a unique name rather than made by ``tempfile``,
    whose 0600 permissions would stick to the result. On any error the temp file is removed and
    an earlier ``path`` is left untouched; a full disk is raised as an OSError naming ``path``, whatever
    ``write`` turned it into.
    """
    path = os.fspath(path)
    folder, filename = os.path.split(os.path.abspath(path))
    temp_path = os.path.join(folder, f'.{filename}.{uuid.uuid4().hex}.tmp')
    try:
        os.makedirs(folder, exist_ok=True)
        with open(temp_path, mode.replace('w', 'x'), **open_kwargs) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException as error:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        full = out_of_space(error)
        if full is not None:
            raise OSError(full.errno, full.strerror, path) from error
        raise
