"""Process-wide settings of the hardware flags: torch's CPU threads and glibc's malloc policy."""
import ctypes
import math
import os
import time

import torch

import util

# torch's own thread count (its default: the physical cores, or OMP_NUM_THREADS), read before any change.
TORCH_DEFAULT_THREADS = torch.get_num_threads()
SAMPLE_S = 0.25  # how long --num_threads 0 watches the machine's CPU use before choosing

# mallopt() parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
LARGEST_TRIM_THRESHOLD = 2 ** 31 - 1


def keep_freed_memory():
    """Have glibc's malloc keep freed memory for reuse: no block mapped on its own (M_MMAP_MAX 0) and
    the heap never trimmed. Returns whether the C library took both settings (False off glibc).

    Why: glibc maps each block over its mmap threshold (32 MB at most) on its own and unmaps it
    when it is freed, so every training step's large tensors were page-faulted in and zeroed by the
    kernel afresh: ~64 000 page faults per cpu-preset step here, 1 400 with this. The price: the
    process holds on to its peak memory until it ends.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no C library symbols, or no mallopt (macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST_TRIM_THRESHOLD))


def usable_cores():
    """The logical cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpu_jiffies():
    """(all, idle) CPU time of the whole machine so far, in clock ticks, from /proc/stat's first line."""
    with open('/proc/stat', encoding='ascii') as handle:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, handle.readline().split()[1:9])
    return user + nice + system + idle + iowait + irq + softirq + steal, idle + iowait


def busy_cores(seconds=SAMPLE_S):
    """(cores' worth of CPU the machine's other processes use, how that was measured): the non-idle share
    of /proc/stat's CPU time over the next ``seconds`` (this process sleeps meanwhile) times the logical
    cores; where there is no /proc/stat, the 1-minute load average (which still counts a process that just
    ended, e.g. the previous step of a pipeline)."""
    try:
        before = _cpu_jiffies()
        time.sleep(seconds)
        after = _cpu_jiffies()
    except (OSError, ValueError):
        try:
            return os.getloadavg()[0], 'the 1-minute load average'
        except (OSError, AttributeError):
            return 0.0, 'no load figure on this system'
    spent, idle = after[0] - before[0], after[1] - before[1]
    share = 1.0 - idle / spent if spent > 0 else 0.0
    return share * (os.cpu_count() or 1), f'CPU use over {seconds:g} s'


def free_core_threads(usable, busy, default):
    """Threads for the cores other processes leave free: ``usable`` cores less ``busy`` (rounded), at least
    1 and at most torch's ``default``. One thread per free core: a thread more than the free cores waits at
    every parallel operation for the one the system paused (~10x slower per step beside busy processes)."""
    return max(1, min(default, usable, math.floor(usable - busy + 0.5)))


def automatic_threads():
    """(threads, why) for --num_threads 0: OMP_NUM_THREADS when the environment sets it (torchrun does),
    else one per core not busy with other processes right now."""
    if os.environ.get('OMP_NUM_THREADS', '').strip():
        return TORCH_DEFAULT_THREADS, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS'].strip()} in the environment"
    usable = usable_cores()
    busy, measured = busy_cores()
    threads = free_core_threads(usable, busy, TORCH_DEFAULT_THREADS)
    return threads, f'{usable} usable cores, {busy:.1f} busy with other processes ({measured})'


def apply_hardware_options(opt):
    """--num_threads and --keep_freed_memory, for this process (and the workers it forks later);
    returns whether freed memory is now kept. --num_threads 0 chooses the threads from the cores free now
    and prints what it chose and why."""
    if opt.num_threads > 0:
        torch.set_num_threads(opt.num_threads)
    else:
        threads, why = automatic_threads()
        torch.set_num_threads(threads)
        if threads > 1 and not util.PASSIVE_HERE:
            why += '; idle OpenMP threads spin in this process (OMP_WAIT_POLICY=PASSIVE before torch loads stops it)'
        print(f'torch threads: {threads} (--num_threads 0: {why}; --num_threads N sets them)', flush=True)
    return opt.keep_freed_memory and keep_freed_memory()
