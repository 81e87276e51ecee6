"""One owner per run folder: ``run.lock`` in it names the process (script, pid, host) writing into the run.

train.py holds it for the whole run (rank 0 under torchrun), test.py, crf.py and pseudo.py while they write
into a run, so a second script on the same folder stops at once with one line naming the owner instead of
mixing its loss log, checkpoints or masks with the other's. Ownership is an flock on the file: the kernel
drops it when its process ends in any way, SIGKILL included. The file itself is removed on release; one
left by a process killed outright is taken over when it names a process of this host (its flock is gone
with it). One naming another host is refused: whether that process still runs cannot be told from here.
"""
import errno
import fcntl
import json
import os
import socket
import time

LOCK_NAME = 'run.lock'
# A folder that cannot take the lock file: no write permission, a read-only file system.
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


RECORD_KEYS = ('script', 'pid', 'host', 'since')


def _read_owner(fd):
    """The owner recorded in the open lock file (a dict of RECORD_KEYS), or {} when empty or not a record."""
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        return {}
    return owner if isinstance(owner, dict) and all(key in owner for key in RECORD_KEYS) else {}


def _describe(owner):
    """'train.py (pid 4242 on HOST, since 2025-01-31 12:00:00)' of a recorded owner."""
    if not owner:  # it has locked the file but not yet written its record
        return 'another process'
    return f"{owner['script']} (pid {owner['pid']} on {owner['host']}, since {owner['since']})"


def _is_same_file(fd, path):
    """True while ``path`` is still the file open as ``fd`` (a releasing owner may have just removed it)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _missing_folders(folder):
    """The folders ``os.makedirs(folder)`` would create, deepest first."""
    missing = []
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


class RunLock:
    """``with RunLock(folder, 'test.py'):`` holds the run folder, or exits with one ``error:`` line when another
    process holds it. ``acquire()`` / ``release()`` for a lock taken later than it is released (train.py)."""

    def __init__(self, folder, script):
        self.folder, self.script = folder, script
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd = None
        self._created = []

    def acquire(self):
        """Take the lock (creating the run folder if needed), or exit naming its owner."""
        self._created = _missing_folders(self.folder)
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                owner = _read_owner(fd)
                os.close(fd)
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                raise SystemExit(f'error: {self.folder} is in use by {_describe(owner)}; wait for it to finish '
                                 f'or stop it, or pass another --name')
            if _is_same_file(fd, self.path):
                break
            os.close(fd)
        owner = _read_owner(fd)
        if owner and owner.get('host') != socket.gethostname():
            os.close(fd)
            raise SystemExit(f'error: {self.path} names {_describe(owner)}, another host; if that run has ended, '
                             f'delete {self.path}, else wait for it or pass another --name')
        if owner:
            print(f'note: {self.path} was left by {_describe(owner)}, which is no longer running; taken over')
        record = {'script': self.script, 'pid': os.getpid(), 'host': socket.gethostname(),
                  'since': time.strftime('%Y-%m-%d %H:%M:%S')}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + '\n').encode('utf-8'), 0)
        self._fd = fd

    def _open(self):
        """The lock file opened for writing (created with its folders if needed); exit with one line when
        the folder cannot be written (a full disk passes through, for the script's own message)."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if error.errno not in NOT_WRITABLE:
                raise
            raise SystemExit(f'error: cannot write {error.filename} ({error.strerror}); pass a writable '
                             f'--result_dir or fix the folder permissions') from None

    def release(self):
        """Give the lock up: remove the file, then the folders taking it created if they stayed empty."""
        if self._fd is None:
            return
        # Removed before unlocking: whoever locks the file next finds it gone and locks a new one.
        os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        for folder in self._created:
            try:
                os.rmdir(folder)
            except OSError:  # not empty: the run wrote into it
                break
        self._created = []

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()
