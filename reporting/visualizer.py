"""Training feedback: the loss log (CSV), sample grids (PNG) and live visdom plots.

Visdom is one optional sink among several: every visdom message goes through a bounded queue to a
background daemon thread, so a missing, slow or restarting server never stops or slows training.
"""
import collections
import csv
import logging
import os
import re
import sys
import threading
import urllib.parse
import warnings

import numpy as np
from PIL import Image
from tqdm import tqdm

from records.run_folder import loss_log, sample_path, samples_folder
from util.atomic import atomic_write
from reporting.sample_grid import image_grid, labelled_grid

_CONNECT_TIMEOUT_S = 1.0
_READ_TIMEOUT_S = 3.0
_RETRY_S = 1.0          # how often an unreachable server is tried again
_MAX_PENDING = 512      # queued line points; the oldest are dropped beyond this
_CLOSE_WAIT_S = 2.0


class _Unreachable(Exception):
    """The visdom server did not answer. Deliberately not a ConnectionError: visdom catches
    those itself and prints a message, this one reaches our worker untouched."""


def _say(line):
    """Print ``line`` on stdout on a line of its own, above train.py's progress bar (redrawn after it)."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


class Visualizer:
    """Writes `<run_dir>/loss_log.csv` and `<run_dir>/samples/`, and plots to visdom.

    run_dir: the run folder. display_id: 0 turns visdom off. server, port, env: where to plot.
    enabled: False (non-zero DDP ranks) makes every method a no-op: no files, no visdom.
    resume_step: when resuming, rows of an existing loss_log.csv past this step are dropped, so
    no step appears twice; None starts a fresh log (an old one is replaced on the first write).
    """

    def __init__(self, run_dir, display_id=1, server='http://localhost', port=8097, env='main',
                 enabled=True, resume_step=None):
        self.run_dir = run_dir
        self.enabled = enabled
        self.url = f'{server}:{port}'
        self._server, self._port, self._env = server, port, env
        self._log_path = loss_log(run_dir)
        self._log_file = None
        self._log_writer = None
        self._columns = None
        self._fresh_log = resume_step is None
        self._lines = collections.deque(maxlen=_MAX_PENDING)
        self._image = None  # only the newest grid is worth sending
        self._cond = threading.Condition()
        self._stopping = False
        self._online = None  # unknown until the first request; then True/False
        self._hinted = False
        self._announced = False
        self._client = None
        self._thread = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        if resume_step is not None and os.path.exists(self._log_path):
            self._truncate_log(resume_step)
        if display_id > 0:
            # Visdom logs every failed request and session; we report reachability ourselves.
            logging.getLogger('visdom').setLevel(logging.CRITICAL)
            self._thread = threading.Thread(target=self._run, name='visdom-sender', daemon=True)
            self._thread.start()

    @staticmethod
    def loss_window(group):
        """The visdom window id used for the loss group `group`."""
        return 'loss_' + re.sub(r'[^0-9A-Za-z_-]+', '_', group)

    image_window = 'samples'

    # ---- loss log -------------------------------------------------------------------------------
    def _truncate_log(self, resume_step):
        with open(self._log_path, newline='') as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        self._columns = rows[0][1:]
        kept = [row for row in rows[1:] if row and float(row[0]) <= resume_step]

        atomic_write(self._log_path, lambda out: csv.writer(out).writerows([rows[0]] + kept), newline='')

    def log_losses(self, step, losses):
        """Append one row (step, then the loss values in the column order of the first call) to
        loss_log.csv; names not among the columns are ignored, missing ones left empty."""
        if not self.enabled:
            return
        if self._log_file is None:
            header_needed = (self._fresh_log or not os.path.exists(self._log_path)
                             or os.path.getsize(self._log_path) == 0)
            self._columns = self._columns or list(losses)
            self._log_file = open(self._log_path, 'w' if header_needed else 'a', newline='')
            self._log_writer = csv.DictWriter(self._log_file, ['step'] + self._columns,
                                              restval='', extrasaction='ignore')
            if header_needed:
                self._log_writer.writeheader()
        self._log_writer.writerow({'step': step, **{k: float(v) for k, v in losses.items()}})
        self._log_file.flush()  # a crash loses at most the row being written

    # ---- images ---------------------------------------------------------------------------------
    def save_samples(self, step, visuals):
        """Write the grid of `visuals` with each column named (see labelled_grid) as
        samples/step_{step:07d}.png; returns the path."""
        if not self.enabled:
            return None
        os.makedirs(samples_folder(self.run_dir), exist_ok=True)
        path = sample_path(self.run_dir, step)
        grid = Image.fromarray(labelled_grid(visuals))
        atomic_write(path, lambda handle: grid.save(handle, format='PNG'), mode='wb')
        return path

    def display_images(self, step, visuals):
        """Show the grid of `visuals` in one visdom window (captioned with their names)."""
        if self._thread is None:
            return
        grid = image_grid(visuals).transpose(2, 0, 1)
        with self._cond:
            self._image = (grid, f'step {step}: ' + ' | '.join(visuals))
            self._cond.notify()

    # ---- line plots -----------------------------------------------------------------------------
    def plot_losses(self, step, losses, groups):
        """Append the point `step` to one visdom line window per group {title: [loss names]}."""
        if self._thread is None:
            return
        with self._cond:
            for title, names in groups.items():
                names = [n for n in names if n in losses]
                if names:
                    self._lines.append((title, names, step, [float(losses[n]) for n in names]))
            self._cond.notify()

    # ---- background sender ----------------------------------------------------------------------
    def _next_message(self):
        if self._lines:
            return 'line', self._lines.popleft()
        if self._image is not None:
            message, self._image = self._image, None
            return 'image', message
        return None, None

    def _run(self):
        while True:
            with self._cond:
                if self._client is not None:
                    self._cond.wait_for(lambda: self._stopping or self._lines or self._image is not None)
                pending = self._lines or self._image is not None
                if self._stopping and (not pending or self._online is False):
                    return
                kind, message = self._next_message()
            try:
                self._connect()
                if kind is not None:
                    self._deliver(kind, message)
                self._went_online()
            except _Unreachable as exc:
                self._went_offline(exc)
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, timeout=_RETRY_S)
            except Exception as exc:  # one bad message must not end the sender
                warnings.warn(f'visdom: dropped a {kind} message ({exc!r})', RuntimeWarning)

    def _connect(self):
        if self._client is None:
            import visdom  # only the process that plots pays for the import

            class Client(visdom.Visdom):
                def _handle_post(self, url, data=None):
                    try:
                        reply = self.session.post(url, data=data,
                                                  timeout=(_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S))
                    except Exception as exc:
                        raise _Unreachable(type(exc).__name__) from exc
                    if not reply.ok:  # e.g. 403 from a tornado the server does not support
                        raise _Unreachable(f'HTTP {reply.status_code}')
                    return reply.text

            self._client = Client(server=self._server, port=self._port, env=self._env,
                                  raise_exceptions=True, use_incoming_socket=False)

    def _deliver(self, kind, message):
        if kind == 'line':
            title, names, step, values = message
            # 'append' re-creates the window (title, legend) when the server does not have it.
            self._client.line(X=np.full((1, len(values)), float(step)), Y=np.array([values]),
                              win=self.loss_window(title), update='append',
                              opts={'title': title, 'legend': names, 'xlabel': 'step', 'ylabel': 'loss'})
        else:
            grid, caption = message
            # The names go in the title: visdom sizes the pane for the image alone, so a wrapped
            # caption would push the grid out of view.
            self._client.image(grid, win=self.image_window, opts={'title': caption, 'height': grid.shape[1] + 24})

    @property
    def env_url(self):
        """The address of this run's plots in a browser."""
        return f'{self.url}/env/{urllib.parse.quote(self._env)}'

    def _went_online(self):
        self._online = True
        if not self._announced:
            self._announced = True
            _say(f'visdom: live loss plots and samples at {self.env_url}')

    def _went_offline(self, reason):
        self._online = False
        if not self._hinted:
            self._hinted = True
            _say(f'visdom server not reachable at {self.url} ({reason}); start it with: '
                 f'bash start_visdom.sh (or python -m visdom.server -p {self._port} --hostname 127.0.0.1 '
                 '-bind_local); training continues')

    def close(self):
        """Close the loss log; send what is pending to visdom, waiting at most a couple of seconds."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify()
            self._thread.join(_CLOSE_WAIT_S)
            self._thread = None
