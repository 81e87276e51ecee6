"""Where a run keeps its checkpoints, and how the latest loadable one is found."""
import glob
import os
import re

CHECKPOINT_PATTERN = re.compile(r'iter_(\d+)\.pt$')


def checkpoint_path(run_dir, step):
    return os.path.join(run_dir, 'checkpoints', f'iter_{step:07d}.pt')


def list_checkpoints(run_dir):
    """[(step, path)] of the run's checkpoints, oldest first."""
    found = []
    for path in glob.glob(os.path.join(run_dir, 'checkpoints', 'iter_*.pt')):
        match = CHECKPOINT_PATTERN.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)
