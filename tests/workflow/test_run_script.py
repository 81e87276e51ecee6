"""Tests of workflow/run_script.py with a stub script (no torch, so each child starts in a fraction of a second):
exit codes, the working directory, the deadline's SIGINT, and Ctrl-C / SIGTERM reaching the child; a tool run as
a module; and no module importing a script, no tool touching sys.path."""
import ast
import os
import signal
import textwrap
import time

import pytest

from conftest import REPO_ROOT
from workflow.run_script import run_script

# Stops on SIGINT or SIGTERM with 128 + its number, as train.py does. Its first word says what it does
# first: 'write PATH' (then exit 3), 'wait', 'ctrl-c' (SIGINT to its parent and itself, as a terminal
# sends it to the whole process group) or 'term-parent' (SIGTERM to its parent alone).
STUB = textwrap.dedent('''
    import os, signal, sys, time
    signal.signal(signal.SIGINT, lambda signum, _: sys.exit(128 + signum))
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    mode = sys.argv[1]
    if mode == 'write':
        open(sys.argv[2], 'w').close()
        sys.exit(3)
    if mode == 'ctrl-c':
        os.kill(os.getppid(), signal.SIGINT)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
    if mode == 'term-parent':
        os.kill(os.getppid(), signal.SIGTERM)
    time.sleep(30)
''')


@pytest.fixture
def stub(tmp_path):
    path = tmp_path / 'stub.py'
    path.write_text(STUB)
    return str(path)  # absolute: run_script's join with the repository root keeps it


def test_exit_code_is_returned_and_relative_flags_mean_the_working_directory(stub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_script([stub, 'write', 'made.txt']) == 3
    assert (tmp_path / 'made.txt').is_file()


@pytest.mark.slow
def test_deadline_sends_sigint_and_waits_for_the_child_to_stop(stub):
    started = time.monotonic()
    assert run_script([stub, 'wait'], deadline=1.0) == 128 + signal.SIGINT
    assert 1.0 <= time.monotonic() - started < 10


@pytest.mark.parametrize('mode, code', [('ctrl-c', 128 + signal.SIGINT), ('term-parent', 128 + signal.SIGTERM)])
def test_a_signal_to_the_driver_reaches_the_child_and_the_driver_waits_for_it(stub, mode, code):
    before = signal.getsignal(signal.SIGTERM)
    assert run_script([stub, mode]) == code
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_the_script_is_found_under_the_repository_root_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_script(['train.py', '--help']) == 0


@pytest.mark.slow
def test_a_tool_runs_as_a_module_of_the_repository_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_script(['-m', 'tools.prepare_weak', '--help']) == 0


def test_no_module_imports_a_script():
    # Scripts (the .py files at the repository root) run through run_script; what two of them share
    # lives in models/, data/ or util/.
    scripts = {name[:-3] for name in os.listdir(REPO_ROOT) if name.endswith('.py')}
    found = []
    for folder in ('', 'tools', 'util', 'models', 'data', 'options'):
        for name in sorted(os.listdir(os.path.join(REPO_ROOT, folder))):
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                with open(os.path.join(REPO_ROOT, path), encoding='utf-8') as handle:
                    tree = ast.parse(handle.read())
                found += [(path, module) for module in _imported(tree) if module in scripts]
    assert found == []


def _imported(tree):
    """Top-level names of the absolute imports in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split('.')[0]


def test_no_tool_touches_sys_path():
    # Tools run as modules from the repository root (python -m tools.NAME), which puts the root on sys.path.
    tools = os.path.join(REPO_ROOT, 'tools')
    found = []
    for name in sorted(os.listdir(tools)):
        if name.endswith('.py'):
            with open(os.path.join(tools, name), encoding='utf-8') as handle:
                found += [name] if 'sys.path' in handle.read() else []
    assert found == []
