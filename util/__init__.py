"""Process runtime the scripts share: atomic writes, run locks, progress, Ctrl-C and full-disk handling,
threads and devices.

Importing any of them first sets OpenMP's wait policy to passive (unless the environment sets it): torch's
OpenMP runtime reads it once, when ``import torch`` loads it, so it must be in the environment before that;
train.py, test.py, crf.py and pseudo.py import a util module first, and the processes they and pipeline.py
start inherit it. Why: by default each idle OpenMP thread spins for a while after every parallel region;
on a machine shared with other jobs those spinning threads take the cores the working threads need (the
demo's training step on 2 busy cores: about 4x slower than with passive waits), and on an idle machine
passive waiting costs nothing measurable (docs/PERFORMANCE.md, tools/load_benchmark.py).
"""
import os
import sys

# OMP_WAIT_POLICY: GNU (torch's pip wheels) and LLVM OpenMP; KMP_BLOCKTIME: Intel and LLVM OpenMP.
QUIET_OPENMP = {'OMP_WAIT_POLICY': 'PASSIVE', 'KMP_BLOCKTIME': '0'}


def quiet_openmp(environ):
    """Set the passive wait policy in ``environ`` (a dict of environment variables), keeping values it has."""
    for key, value in QUIET_OPENMP.items():
        environ.setdefault(key, value)


def _passive_here():
    """Whether this process's OpenMP waits passively: the environment says so, or says nothing and torch is
    not loaded yet (it will load with the policy set below)."""
    policy = os.environ.get('OMP_WAIT_POLICY')
    return policy.strip().upper() == 'PASSIVE' if policy is not None else 'torch' not in sys.modules


PASSIVE_HERE = _passive_here()
quiet_openmp(os.environ)
