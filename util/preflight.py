"""Checks made before a script writes anything: its output folder can be written and its disk has room.

A read-only or mistyped ``--result_dir``, or a full disk, then stops a run at once with one line,
instead of after an hour of training when the first checkpoint is written.
"""
import os
import shutil
import tempfile

# Room for what every run writes besides checkpoints: logs, sample grids, masks, overlays, reports.
MIN_FREE_BYTES = 16 * 2 ** 20


def megabytes(size):
    return f'{size / 2 ** 20:.1f} MB'


def nearest_existing(path):
    """``path`` itself, or the closest of its parent folders that exists (what a later makedirs builds on)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_output_dir(path, needed_bytes=MIN_FREE_BYTES, what='the outputs', flag='--result_dir'):
    """Exit with one ``error:`` line unless the folder ``path`` (created later when missing) can be
    written and its disk has ``needed_bytes`` free for ``what``; the fix names the script's ``flag``.
    Creates nothing."""
    base = nearest_existing(path)
    if not os.path.isdir(base):
        raise SystemExit(f'error: cannot write {path}: {base} is a file, not a folder; pass another {flag}')
    try:
        # Actually writing is the only test that also holds for root and for read-only mounts.
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as error:
        raise SystemExit(f'error: cannot write in {base} ({error.strerror}); pass a writable {flag} '
                         f'or fix the folder permissions') from None
    free = shutil.disk_usage(base).free
    if free < needed_bytes:
        raise SystemExit(f'error: only {megabytes(free)} free on the disk of {base}, {what} need about '
                         f'{megabytes(needed_bytes)}; free some space or pass a {flag} on another disk')


def checkpoint_bytes(model):
    """About the size of one checkpoint of ``model``: its networks' tensors plus Adam's two moments
    per trainable weight."""
    total = 0
    for net in model.nets().values():
        total += sum(t.numel() * t.element_size() for t in net.state_dict().values())
        total += 2 * sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    return total
