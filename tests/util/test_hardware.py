"""Tests of util/hardware.py (the --num_threads and --keep_freed_memory process settings) and of the OpenMP
wait policy util/__init__.py sets."""
import argparse
import ast
import json
import os
import platform
import subprocess
import sys

import pytest
import torch

import util
from conftest import REPO_ROOT
from util import hardware
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


@pytest.mark.slow
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


@pytest.mark.parametrize('usable, busy, default, expected', [
    (2, 0.0, 2, 2),    # idle: torch's own count
    (2, 0.3, 2, 2),    # a little background noise keeps both
    (2, 1.0, 2, 1),    # one core taken by another job
    (2, 7.5, 2, 1),    # overloaded: still one thread
    (16, 3.2, 8, 8),   # never more than torch's default (physical cores)
    (16, 12.6, 8, 3)])
def test_threads_follow_the_free_cores(usable, busy, default, expected):
    assert hardware.free_core_threads(usable, busy, default) == expected


def test_busy_cores_reads_the_non_idle_share_of_cpu_time(monkeypatch):
    samples = iter([(1000, 600), (1400, 800)])  # 400 ticks spent, 200 of them idle: half the machine busy
    monkeypatch.setattr(hardware, '_cpu_jiffies', lambda: next(samples))
    monkeypatch.setattr(hardware.time, 'sleep', lambda seconds: None)
    monkeypatch.setattr(hardware.os, 'cpu_count', lambda: 4)
    assert hardware.busy_cores(0.25) == (2.0, 'CPU use over 0.25 s')


def test_busy_cores_falls_back_to_the_load_average_without_proc_stat(monkeypatch):
    def missing():
        raise FileNotFoundError('/proc/stat')
    monkeypatch.setattr(hardware, '_cpu_jiffies', missing)
    monkeypatch.setattr(hardware.os, 'getloadavg', lambda: (3.5, 2.0, 1.0))
    assert hardware.busy_cores() == (3.5, 'the 1-minute load average')


def test_proc_stat_is_read_where_it_exists():
    if not os.path.isfile('/proc/stat'):
        pytest.skip('no /proc/stat on this system')
    total, idle = hardware._cpu_jiffies()
    assert 0 <= idle <= total


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_num_threads_0_chooses_the_free_cores_and_says_why(monkeypatch, capsys, restore_threads):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(hardware, 'usable_cores', lambda: 2)
    monkeypatch.setattr(hardware, 'busy_cores', lambda: (1.2, 'CPU use over 0.25 s'))
    monkeypatch.setattr(hardware, 'TORCH_DEFAULT_THREADS', 2)
    apply_hardware_options(argparse.Namespace(num_threads=0, keep_freed_memory=False))
    assert torch.get_num_threads() == 1
    assert capsys.readouterr().out == ('torch threads: 1 (--num_threads 0: 2 usable cores, 1.2 busy with other '
                                       'processes (CPU use over 0.25 s); --num_threads N sets them)\n')


def test_num_threads_0_keeps_omp_num_threads_from_the_environment(monkeypatch, capsys, restore_threads):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    monkeypatch.setattr(hardware, 'TORCH_DEFAULT_THREADS', 1)
    monkeypatch.setattr(hardware, 'busy_cores', lambda: pytest.fail('no measurement when the environment says'))
    apply_hardware_options(argparse.Namespace(num_threads=0, keep_freed_memory=False))
    assert torch.get_num_threads() == 1
    assert 'OMP_NUM_THREADS=1 in the environment' in capsys.readouterr().out


def test_num_threads_0_warns_when_openmp_spins_in_this_process(monkeypatch, capsys, restore_threads):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(hardware, 'automatic_threads', lambda: (2, '2 usable cores, 0.0 busy'))
    monkeypatch.setattr(hardware.util, 'PASSIVE_HERE', False)
    apply_hardware_options(argparse.Namespace(num_threads=0, keep_freed_memory=False))
    out = capsys.readouterr().out
    assert 'idle OpenMP threads spin in this process (OMP_WAIT_POLICY=PASSIVE before torch loads' in out


# What a fresh interpreter has: the wait policy util sets, and whether this process's OpenMP got it.
POLICY_PROBE = """
import json, os, sys
sys.path.insert(0, {root!r})
{first}
import util
print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), os.environ.get('KMP_BLOCKTIME'), util.PASSIVE_HERE]))
"""


@pytest.mark.slow
@pytest.mark.parametrize('first, preset, expected', [
    ('', None, ['PASSIVE', '0', True]),                   # util first: torch will load with the policy
    ('import torch', None, ['PASSIVE', '0', False]),      # torch first: children get it, this process spins
    ('import torch', 'PASSIVE', ['PASSIVE', '0', True]),  # the launcher exported it
    ('', 'ACTIVE', ['ACTIVE', '0', False])])              # the user's own choice is kept
def test_importing_util_sets_a_passive_openmp_wait_policy(first, preset, expected):
    env = {key: value for key, value in os.environ.items() if key not in util.QUIET_OPENMP}
    if preset:
        env['OMP_WAIT_POLICY'] = preset
    done = subprocess.run([sys.executable, '-c', POLICY_PROBE.format(root=REPO_ROOT, first=first)],
                          capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout) == expected


@pytest.mark.parametrize('script', ['train.py', 'test.py', 'crf.py', 'pseudo.py'])
def test_scripts_import_util_before_any_library_that_loads_openmp(script):
    with open(os.path.join(REPO_ROOT, script), encoding='utf-8') as handle:
        tree = ast.parse(handle.read())
    modules = [node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
               for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    first = next(name for name in modules if name.split('.')[0] not in sys.stdlib_module_names)
    assert first.split('.')[0] == 'util', (script, first)
