"""A one-line description of the machine a result was measured on."""
import contextlib
import os
import platform

import torch


def machine():
    """One line: CPU model and logical cores, GPU (if any), torch and Python versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo', encoding='utf-8') as handle:
            names = [line.split(':', 1)[1].strip() for line in handle if line.startswith('model name')]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return (f'{cpu}, {os.cpu_count()} logical cores, {gpu}; torch {torch.__version__}, '
            f'Python {platform.python_version()}, {platform.system()} {platform.release()}')
