"""How the scripts' processes end when stopped from outside: Ctrl-C gives one line, workers die with their parent.

Imports only the standard library: ``exit_quietly_on_ctrl_c`` runs before a script's slow imports.
"""
import ctypes
import os
import signal
import sys

# The status a shell reports for a process ended by SIGINT: 128 + 2.
CTRL_C_STATUS = 128 + signal.SIGINT
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_quietly_on_ctrl_c(module_name):
    """When ``module_name`` is '__main__' (the script itself, not an import by a test or a tool), Ctrl-C
    prints one line and exits with status 130 instead of a KeyboardInterrupt traceback. train.py's
    training loop replaces it with its own handler (save, then stop) and puts it back afterwards."""
    if module_name != '__main__':
        return
    script, owner = os.path.basename(sys.argv[0]), os.getpid()

    def stop(signum, frame):
        if os.getpid() != owner:  # a forked worker (data loader): its parent reports the stop
            signal.default_int_handler(signum, frame)
        print(f'{script}: stopped by Ctrl-C; every file written so far is complete', file=sys.stderr)
        raise SystemExit(CTRL_C_STATUS)
    signal.signal(signal.SIGINT, stop)


def init_pool_worker(parent_pid):
    """Initializer of a multiprocessing pool's workers: Ctrl-C is the parent's to handle (it stops the pool),
    and on Linux a worker is killed the moment its parent dies, even by SIGKILL, rather than finishing its
    task and failing with a BrokenPipeError traceback when it sends the result back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith('linux'):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
