"""Tests of util/hardware.py: the --num_threads and --keep_freed_memory process settings."""
import argparse
import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from util.hardware import apply_hardware_options

# Run in a fresh interpreter: the malloc policy is process-wide and cannot be undone. Two 40 MB
# tensors are made and freed per round; the page faults of the last 8 of 24 rounds are printed (the
# kept heap takes up to ~8 rounds to settle, and now and then a later round still maps one tensor afresh).
FAULTS_PER_ROUND = """
import json, resource, sys, torch
sys.path.insert(0, {root!r})
from util.hardware import keep_freed_memory
kept = keep_freed_memory() if {keep} else False
x = torch.ones(10 * 2 ** 20)
faults = []
for _ in range(24):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = x * 2
    z = y + 1
    del y, z
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"kept": kept, "faults": faults[16:]}}))
"""


def faults_per_round(keep):
    done = subprocess.run([sys.executable, '-c', FAULTS_PER_ROUND.format(root=REPO_ROOT, keep=keep)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='the malloc policy is glibc-only')
def test_kept_memory_is_reused_instead_of_faulted_in_again():
    default, kept = faults_per_round(False), faults_per_round(True)
    pages_per_tensor = 10 * 2 ** 20 * 4 // os.sysconf('SC_PAGE_SIZE')
    assert kept['kept'] is True and default['kept'] is False
    # glibc's default maps each 40 MB tensor afresh: every page faults in again, every round.
    assert all(count >= pages_per_tensor for count in default['faults']), default
    # Kept: most rounds fault (almost) nothing, and all of them together a fraction of the default's.
    assert sorted(kept['faults'])[len(kept['faults']) // 2] < pages_per_tensor // 20, kept
    assert sum(kept['faults']) <= sum(default['faults']) / 4, (kept, default)


def test_apply_hardware_options_sets_threads_and_skips_the_policy_when_asked():
    threads = torch.get_num_threads()
    try:
        kept = apply_hardware_options(argparse.Namespace(num_threads=1, keep_freed_memory=False))
        assert kept is False and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
