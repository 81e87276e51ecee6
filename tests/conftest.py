"""Shared fixtures for the training tests: a tiny demo dataset and tiny option/argument factories."""
import hashlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request

import pytest
import torch

from data.synthetic import ensure_demo_dataset
from options.train_options import TrainOptions
from reporting.visualizer import Visualizer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_script(name, alias):
    """The repository's script ``name``.py imported as module ``alias``: test.py must not be imported as
    ``test``, the name of Python's own regression-test package."""
    spec = importlib.util.spec_from_file_location(alias, os.path.join(REPO_ROOT, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


test_script = _load_script('test', 'test_script')


class Terminal(io.StringIO):
    """Output that says it is a terminal, as a console's stderr does."""

    def isatty(self):
        return True

# One thread: the tests share 2 cores with other jobs, and oversubscribed threads are ~3x slower here.
torch.set_num_threads(1)

TINY_DATASET, TINY_FOLDER = 'tiny', 'tiny_1'
# The smallest settings that exercise every part of the model (32 px, 4 base channels, 1 res block).
TINY_FLAGS = ['--img_size', '32', '--ch', '4', '--n_res', '1', '--num_workers', '0', '--num_threads', '1',
              '--display_id', '0', '--amp', 'off', '--device', 'cpu', '--batch_size', '1', '--iteration', '4']


@pytest.fixture(scope='session')
def tiny_dataroot(tmp_path_factory):
    """A dataroot holding ``tiny/tiny_1``: 6 lesion + 6 normal 32 px phantoms (and small val/test splits).

    Not named ``demo``, so train.py does not try to (re)build its default-sized demo data there.
    """
    root = tmp_path_factory.mktemp('dataroot')
    ensure_demo_dataset(root, dataset=TINY_DATASET, folder=TINY_FOLDER, size=32, n_a=6, n_b=6,
                        n_val=3, n_testA=3, n_testB=2)
    return str(root)


@pytest.fixture
def tiny_argv(tiny_dataroot, tmp_path):
    """Factory ``tiny_argv(*extra, name='run')``: train.py arguments of a tiny seeded CPU run on the tiny
    dataset, writing under ``tmp_path/results``; ``extra`` flags come last, so they win."""
    def make(*extra, name='run'):
        return ['--dataroot', tiny_dataroot, '--dataset', TINY_DATASET, '--folder', TINY_FOLDER,
                '--result_dir', str(tmp_path / 'results'), '--name', name, *TINY_FLAGS, *map(str, extra)]
    return make


@pytest.fixture
def tiny_opt(tiny_argv):
    """Factory ``tiny_opt(*extra, name='run')``: parsed TrainOptions of a tiny run (see ``tiny_argv``)."""
    def make(*extra, name='run'):
        return TrainOptions().parse(tiny_argv(*extra, name=name))
    return make


@pytest.fixture
def run_folder(tmp_path):
    """Factory ``run_folder(name='run')``: the run folder a ``tiny_argv`` run writes to."""
    def folder(name='run'):
        return os.path.join(str(tmp_path / 'results'), TINY_DATASET, TINY_FOLDER, name)
    return folder


@pytest.fixture
def tiny_test_argv(tiny_argv):
    """Factory ``tiny_test_argv(*extra, name='run')``: test.py (or crf.py, pseudo.py) arguments: the very
    list of ``tiny_argv``, as the scripts share one argument list; ``extra`` comes last."""
    def make(*extra, name='run'):
        return tiny_argv(name=name) + list(map(str, extra))
    return make


TINY_TEST_FLAGS = TINY_FLAGS


@pytest.fixture
def tiny_test_opt(tiny_test_argv):
    """Factory ``tiny_test_opt(*extra, name='run')``: parsed TestOptions of a tiny run (see ``tiny_test_argv``)."""
    from options.test_options import TestOptions

    def make(*extra, name='run'):
        return TestOptions().parse(tiny_test_argv(*extra, name=name))
    return make


def usage_error(capsys, call, *args):
    """What argparse printed on stderr when ``call(*args)`` refused its arguments (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        call(*args)
    assert info.value.code == 2, info.value.code
    return capsys.readouterr().err


def help_text(capsys, call):
    """What ``call(['--help'])`` printed on stdout; it must exit with status 0."""
    with pytest.raises(SystemExit) as info:
        call(['--help'])
    assert info.value.code == 0, info.value.code
    return capsys.readouterr().out


def file_hashes(folder):
    """{relative path: sha256} of every file under ``folder`` (to compare two builds byte for byte)."""
    hashes = {}
    for d, _, names in os.walk(folder):
        for n in names:
            with open(os.path.join(d, n), 'rb') as handle:
                hashes[os.path.relpath(os.path.join(d, n), folder)] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


# ---- a real visdom server on 127.0.0.1, for the visualizer, training and browser tests ----

def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout_s=15.0, interval_s=0.1):
    """Poll condition() every ``interval_s`` until it is truthy; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


class VisdomServer:
    """A real `python -m visdom.server` subprocess on 127.0.0.1:port."""

    def __init__(self, port, env_path):
        self.port, self.env_path, self.process = port, env_path, None

    def start(self):
        os.makedirs(self.env_path, exist_ok=True)
        self.log = open(os.path.join(self.env_path, 'server.log'), 'ab')
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'visdom.server', '-port', str(self.port), '--hostname', '127.0.0.1',
             '-bind_local', '-env_path', self.env_path], stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_until(self._answers, timeout_s=30):
            self.stop()
            with open(self.log.name) as f:
                pytest.fail(f'visdom server did not start:\n{f.read()[-2000:]}')

    def _answers(self):
        assert self.process.poll() is None, 'visdom server exited'
        try:
            return urllib.request.urlopen(f'http://127.0.0.1:{self.port}/', timeout=1).status == 200
        except OSError:
            return False

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def client(self):
        import visdom
        return visdom.Visdom(server='http://127.0.0.1', port=self.port, use_incoming_socket=False,
                             raise_exceptions=True)

    def window(self, win, env):
        """The window's data as a dict, or None while the server does not have it."""
        try:
            text = self.client().get_window_data(win=win, env=env)
        except ConnectionError:
            return None
        return json.loads(text) if text else None


@pytest.fixture(scope='session')
def visdom_assets():
    """visdom's static/version.built marker plus (empty placeholder) front-end files, without network,
    so the server does not try to download them at start."""
    subprocess.run(['bash', os.path.join(REPO_ROOT, 'tools', 'install_visdom_assets.sh'), '--offline',
                    sys.executable], check=True, capture_output=True)


@pytest.fixture
def visdom_server(visdom_assets, tmp_path):
    server = VisdomServer(free_port(), str(tmp_path / 'visdom_env'))
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


def traces(server, group, env):
    window = server.window(Visualizer.loss_window(group), env)
    return {t['name']: (t['x'], t['y']) for t in window['content']['data']} if window else {}


def tiny_recipe(path, **pipeline_keys):
    """recipes/demo.toml shrunk to the tiny phantoms (a user's own dataset runs with such a copy)."""
    with open(os.path.join(REPO_ROOT, 'recipes', 'demo.toml'), 'rb') as handle:
        recipe = tomllib.load(handle)
    recipe['pipeline'].update({'rounds': 1, **pipeline_keys})
    recipe['common'].update(img_size=32, n_res=1, amp='off', device='cpu')
    recipe['stage1'].update(ch=4, iteration=40, save_freq=10, print_freq=10, batch_size=1)
    recipe['stage2'].update(ch=4, iteration=12, save_freq=6, print_freq=6)
    lines = []
    for section, values in recipe.items():
        lines.append(f'[{section}]')
        lines += [f'{key} = {json.dumps(value)}' for key, value in values.items()]
    path.write_text('\n'.join(lines) + '\n')  # JSON scalars are TOML scalars
    return str(path)
