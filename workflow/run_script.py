"""Run one of the repository's scripts in a child process, as a user would from the command line.

Scripts never import each other: a driver (pipeline.py, tools/benchmark.py, tools/speed_benchmark.py)
runs them (and tools, as modules) with ``run_script``, and they talk through the files they write
(records/record_io.py).
"""
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_command(argv):
    """The command line and environment (None: this process's) of ``python SCRIPT FLAGS...`` for ``argv`` =
    [SCRIPT (a path under the repository root, e.g. 'train.py'), *FLAGS], or of ``python -m TOOL FLAGS...``
    for ``argv`` = ['-m', TOOL (a module under the root, e.g. 'tools.export_weights'), *FLAGS], from any
    working directory: a module is found through PYTHONPATH, a script by its path."""
    if argv[0] != '-m':
        return [sys.executable, os.path.join(ROOT, argv[0]), *map(str, argv[1:])], None
    path = os.pathsep.join([ROOT, *filter(None, [os.environ.get('PYTHONPATH')])])
    return [sys.executable, *map(str, argv)], dict(os.environ, PYTHONPATH=path)


def run_script(argv, deadline=None):
    """Exit code of ``python SCRIPT FLAGS...`` for ``argv`` = [SCRIPT (a path under the repository
    root, e.g. 'train.py'), *FLAGS], or of ``python -m TOOL FLAGS...`` for ['-m', TOOL, *FLAGS].

    The child runs in this process's working directory, so relative paths among the flags keep their
    meaning (a script records only its file's base name in its command line). Ctrl-C reaches the child
    too (same process group), so this waits for it to save and stop; SIGTERM is passed on to it. After
    ``deadline`` seconds the child gets SIGINT, on which train.py saves at its current step and stops.
    """
    command, env = child_command(argv)
    child = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    # The child got the same Ctrl-C and decides how to stop; its exit code says so. A KeyboardInterrupt here
    # could land between the child's exit and its reaping, and subprocess then reports the lost status as 0:
    # a stopped step taken for a finished one. So Ctrl-C only interrupts the wait, which goes on.
    previous_int = signal.signal(signal.SIGINT, lambda *_: None)
    ends = None if deadline is None else time.monotonic() + deadline
    try:
        while True:
            try:
                return child.wait(None if ends is None else max(ends - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGINT)
                ends = None
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
