"""Process-wide settings of the hardware flags: torch's CPU threads and glibc's malloc policy."""
import ctypes

import torch

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


def apply_hardware_options(opt):
    """--num_threads and --keep_freed_memory, for this process (and the workers it forks later);
    returns whether freed memory is now kept."""
    if opt.num_threads > 0:
        torch.set_num_threads(opt.num_threads)
    return opt.keep_freed_memory and keep_freed_memory()
