"""Shared fixtures for the training tests: a tiny demo dataset and tiny option/argument factories."""
import hashlib
import os

import pytest
import torch

from data.synthetic import ensure_demo_dataset
from options.train_options import TrainOptions

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


# Flags of TINY_FLAGS that only train.py knows; test.py and crf.py share every other (base) flag.
TRAIN_ONLY_FLAGS = ('--display_id', '--iteration')


@pytest.fixture
def tiny_test_argv(tiny_argv):
    """Factory ``tiny_test_argv(*extra, name='run')``: test.py arguments matching ``tiny_argv`` (same data,
    result dir, architecture and hardware flags, without the training-only ones); ``extra`` comes last."""
    def make(*extra, name='run'):
        return _without_train_only(tiny_argv(name=name)) + list(map(str, extra))
    return make


def _without_train_only(argv):
    """``argv`` less the TRAIN_ONLY_FLAGS and their values."""
    return [arg for i, arg in enumerate(argv)
            if arg not in TRAIN_ONLY_FLAGS and (i == 0 or argv[i - 1] not in TRAIN_ONLY_FLAGS)]


TINY_TEST_FLAGS = _without_train_only(TINY_FLAGS)


@pytest.fixture
def tiny_test_opt(tiny_test_argv):
    """Factory ``tiny_test_opt(*extra, name='run')``: parsed TestOptions of a tiny run (see ``tiny_test_argv``)."""
    from options.test_options import TestOptions

    def make(*extra, name='run'):
        return TestOptions().parse(tiny_test_argv(*extra, name=name))
    return make


def file_hashes(folder):
    """{relative path: sha256} of every file under ``folder`` (to compare two builds byte for byte)."""
    hashes = {}
    for d, _, names in os.walk(folder):
        for n in names:
            with open(os.path.join(d, n), 'rb') as handle:
                hashes[os.path.relpath(os.path.join(d, n), folder)] = hashlib.sha256(handle.read()).hexdigest()
    return hashes

