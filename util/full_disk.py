"""A disk (or quota) that fills up while a script writes: one line naming the file, the space left and the fix.

Nothing is lost by it: every output is written atomically (util/atomic.py), so the file being written is
dropped whole and earlier files stay as they were.
"""
import contextlib
import errno
import shutil

from util.preflight import megabytes, nearest_existing

OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(error):
    """The full-disk or quota OSError behind ``error``: itself or one it was raised while handling (torch's
    zip writer reports the failed write of its file object as a RuntimeError); None if there is none."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in OUT_OF_SPACE:
            return error
        error = error.__cause__ or error.__context__
    return None


def full_disk_message(error, then):
    """'error: cannot write FILE (No space left on device); 0.2 MB free on its disk: free some space, then THEN'."""
    free = shutil.disk_usage(nearest_existing(error.filename)).free
    return (f'error: cannot write {error.filename} ({error.strerror}); {megabytes(free)} free on its disk: '
            f'free some space, then {then}')


@contextlib.contextmanager
def exit_on_full_disk(then):
    """Turn a full disk met by an atomic write inside into ``full_disk_message``'s line (exit status 1)."""
    try:
        yield
    except OSError as error:
        if error.errno not in OUT_OF_SPACE or error.filename is None:
            raise
        raise SystemExit(full_disk_message(error, then)) from None
