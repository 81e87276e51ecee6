"""<run>/pipeline.json: what each pipeline step ran, on which inputs, and what it wrote.

A step is up to date when its recorded command and input digests equal the planned ones and its
outputs still have the recorded digests (whole, not edited since). Digests are SHA-256 of a file's
bytes, or of a folder's sorted relative paths and file digests.
"""
import hashlib
import json
import os
import subprocess

from data.image_io import write_json_atomic

from .records import file_sha256


def digest(path):
    """SHA-256 of a file, of a folder (paths and contents of every file below it), or None when
    ``path`` does not exist."""
    if os.path.isfile(path):
        return file_sha256(path)
    if not os.path.isdir(path):
        return None
    lines = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            lines.append(f'{os.path.relpath(full, path)} {file_sha256(full)}')
    return hashlib.sha256('\n'.join(lines).encode()).hexdigest()


def current_commit():
    """The repository's commit (with '+changes' when the work tree differs from it), or 'unknown'."""
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return commit + ('+changes' if dirty else '')


class PipelineRecord:
    """The steps' records of one pipeline run folder, saved atomically after every change."""

    def __init__(self, path):
        self.path = path
        self.data = {'steps': {}}
        if os.path.isfile(path):
            with open(path, encoding='utf-8') as handle:
                self.data = json.load(handle)

    @property
    def steps(self):
        return self.data['steps']

    def save(self):
        write_json_atomic(self.path, self.data)

    def is_current(self, name, plan):
        """True when step ``name`` finished with exactly ``plan`` (argv and input digests) and its
        outputs are as it left them."""
        old = self.steps.get(name)
        if not old or old.get('status') != 'done':
            return False
        if old['argv'] != plan['argv'] or old['inputs'] != plan['inputs']:
            return False
        return all(digest(path) == value for path, value in old['outputs'].items())

    def was_interrupted(self, name, plan):
        """True when step ``name`` started with exactly ``plan`` and did not finish (resumable)."""
        old = self.steps.get(name)
        return bool(old) and old.get('status') == 'started' and old['argv'] == plan['argv'] \
            and old['inputs'] == plan['inputs']
