"""Progress of the loops (training, inference, CRF, the CRF search): a bar on a terminal, plain lines in a log.

On a terminal the bar is erased when done, so what a script prints after it (its result table) starts on a
line of its own. In a log file (nohup, pipeline logs, a pipe) a bar would be only carriage returns, so there
the progress is a plain line now and then instead: once this process has been silent for LOG_EVERY_S seconds
and the loop has gone LOG_EVERY_FRACTION of the way since its last line (whichever comes later), with counts,
rate and time left (and the latest ``set_postfix`` values: training's losses); a loop that printed a line
ends with a line saying it is done.
"""
import sys
import time

from tqdm import tqdm

LOG_EVERY_S = 30.0
LOG_EVERY_FRACTION = 0.05
_last_line = [time.monotonic()]  # when this process last printed a progress line (or started)


def progress_bar(iterable=None, total=None, desc=None, unit='it', file=None, initial=0, leave=False,
                 disable=False):
    """Progress over ``iterable`` (or ``total`` steps, counted with ``update``) on ``file`` (stderr): a tqdm
    bar when it is a terminal (kept once done with ``leave``), else a LogProgress; ``initial``: the steps
    done before (a resumed training); ``disable``: silent (a training's other ranks). Iterate over it, or
    use it as a context manager and call ``update(n)``."""
    file = sys.stderr if file is None else file
    if _is_terminal(file) or disable:
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=file, initial=initial, leave=leave,
                    dynamic_ncols=True, disable=disable)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, file=file, initial=initial)


def _is_terminal(file):
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class LogProgress:
    """Progress lines for a log: ``desc: 12/40 img (30%), 0.8 img/s, 00:35 left``."""

    def __init__(self, iterable=None, total=None, desc=None, unit='it', file=None, initial=0):
        self.iterable, self.desc, self.unit, self.file = iterable, desc or 'progress', unit, file or sys.stderr
        if total is None and iterable is not None and hasattr(iterable, '__len__'):
            total = len(iterable)
        self.total, self.n, self._logged_n, self._printed = total, initial, initial, False
        self._initial, self._postfix = initial, ''
        self._started = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - _last_line[0] < LOG_EVERY_S:
            return
        if self.total and (self.n - self._logged_n < LOG_EVERY_FRACTION * self.total or self.n >= self.total):
            return  # too little since the last line, or finished: close() says so
        self._logged_n, self._printed = self.n, True
        self._say(self._status(now), now)

    def set_postfix(self, values):
        """Values shown after the counts in the next lines, as tqdm's set_postfix shows them on its bar."""
        self._postfix = ''.join(f', {key}={value}' for key, value in values.items())

    def close(self):
        """A last line when the loop printed any (a short loop stays silent)."""
        if self._printed:
            now = time.monotonic()
            self._printed = False  # once: both the loop's end and the context's exit close it
            self._say(f'{self.desc}: {self.n} {self.unit} done in {tqdm.format_interval(now - self._started)}', now)

    def _status(self, now):
        elapsed = now - self._started
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        speed = f'{rate:.2f} {self.unit}/s' if rate < 10 else f'{rate:.0f} {self.unit}/s'
        if not self.total:
            return f'{self.desc}: {self.n} {self.unit}, {speed}{self._postfix}'
        left = tqdm.format_interval((self.total - self.n) / rate) if rate > 0 else '?'
        share = f'{100 * self.n / self.total:.0f}%'
        return f'{self.desc}: {self.n}/{self.total} {self.unit} ({share}), {speed}, {left} left{self._postfix}'

    def _say(self, line, now):
        print(line, file=self.file, flush=True)
        _last_line[0] = now
