"""<run>/pipeline.json (run_folder.pipeline_record_path): what each pipeline step ran, on which inputs, and
what it wrote.

A step is up to date when its recorded command and input digests equal the planned ones and its
outputs still have the recorded digests (whole, not edited since). Digests are SHA-256 of a file's
bytes, or of a folder's sorted relative paths and file digests. 'steps' holds the steps of the pipeline's
current step graph alone (what its released file records); 'superseded' the records of steps an earlier
graph had (more rounds, stage 1 trained instead of read from a file), which come back if the step does.
"""
import hashlib
import os
import subprocess
from typing import List, Optional

from data.image_io import write_json_atomic

from .record_io import file_sha256, load_json


def digest(path: str) -> Optional[str]:
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


def current_commit() -> str:
    """The repository's commit (with '+changes' when the work tree differs from it), or 'unknown'."""
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return commit + ('+changes' if dirty else '')


# What every step's record holds, and a finished one's too.
STEP_KEYS = {'argv': list, 'inputs': dict, 'status': str}
DONE_KEYS = {'outputs': dict, 'seconds': (int, float)}


def _problem(data):
    """What keeps ``data`` (pipeline.json as read) from being a pipeline record, or None."""
    if not isinstance(data, dict) or not isinstance(data.get('steps'), dict):
        return "no 'steps' table"
    if not isinstance(data.get('superseded', {}), dict):
        return "its 'superseded' is not a table"
    for name, step in [*data['steps'].items(), *data.get('superseded', {}).items()]:
        if not isinstance(step, dict):
            return f'step {name!r} is not a table'
        needed = {**STEP_KEYS, **(DONE_KEYS if step.get('status') == 'done' else {})}
        if not all(isinstance(step.get(key), kind) for key, kind in needed.items()):
            return f'step {name!r} lacks one of ' + ', '.join(needed)
    return None


def _load(path):
    """pipeline.json at ``path``; exit with one line naming it when it is damaged or not a record."""
    try:
        data = load_json(path)
        problem = _problem(data)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        problem = f'not JSON: {error}'
    if problem:
        raise SystemExit(f'error: {path} is not a pipeline record ({problem}); remove it to start over (every '
                         f'step then runs again) or put back a copy of it')
    return data


class PipelineRecord:
    """The steps' records of one pipeline run folder, saved atomically after every change. With ``base`` the
    paths it records are relative to that folder (a folder copied or moved with its record stays up to date)."""

    def __init__(self, path: str, base: str | None = None):
        self.path, self.base = path, base
        self.data = _load(path) if os.path.isfile(path) else {'steps': {}}

    def key(self, path):
        """How the record names ``path``: as given, or relative to ``base``."""
        return os.path.relpath(path, self.base) if self.base else path

    def locate(self, key):
        return os.path.join(self.base, key) if self.base else key

    @property
    def steps(self) -> dict:
        return self.data['steps']

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def keep_only(self, names: List[str]) -> None:
        """Make 'steps' the records of ``names`` (the step graph of this run, in its order) that exist: the
        others move to 'superseded', and a superseded record of a name in ``names`` comes back."""
        superseded = self.data.get('superseded', {})
        everything = {**superseded, **self.steps}
        steps = {name: everything[name] for name in names if name in everything}
        superseded = {name: step for name, step in everything.items() if name not in steps}
        new = {**self.data, 'steps': steps, 'superseded': superseded}
        if not superseded:
            del new['superseded']
        if new != self.data or list(steps) != list(self.steps):
            self.data = new
            self.save()

    def is_current(self, name: str, plan: dict) -> bool:
        """True when step ``name`` finished with exactly ``plan`` (argv and input digests) and its
        outputs are as it left them."""
        old = self.steps.get(name)
        if not old or old.get('status') != 'done':
            return False
        if old['argv'] != plan['argv'] or old['inputs'] != plan['inputs']:
            return False
        return all(digest(self.locate(key)) == value for key, value in old['outputs'].items())

    def was_interrupted(self, name: str, plan: dict) -> bool:
        """True when step ``name`` started with exactly ``plan`` and did not finish (resumable)."""
        old = self.steps.get(name)
        return bool(old) and old.get('status') == 'started' and old['argv'] == plan['argv'] \
            and old['inputs'] == plan['inputs']
