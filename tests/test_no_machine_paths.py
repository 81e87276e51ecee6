"""Nothing machine-specific is committed: no absolute path of the machine that trained or measured, in the
documents or in the options and records stored inside the released weights files."""
import glob
import os
import re

import pytest
import torch

from conftest import REPO_ROOT

MACHINE_PATH = re.compile(r'(?<![\w.:/])/(work|root|home|tmp|mnt|Users)/')
DOCUMENTS = ['README.md', 'weights/README.md', 'docs/*.md', 'docs/*.json', 'recipes/*.toml']


def _strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key != 'nets':
                yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize('pattern', DOCUMENTS)
def test_documents_name_no_machine_path(pattern):
    paths = glob.glob(os.path.join(REPO_ROOT, pattern))
    assert paths, pattern
    for path in paths:
        with open(path, encoding='utf-8') as handle:
            found = [line for line in handle if MACHINE_PATH.search(line)]
        assert not found, (path, found[:3])


@pytest.mark.parametrize('name', sorted(os.path.basename(p)
                                        for p in glob.glob(os.path.join(REPO_ROOT, 'weights', '*.pt'))))
def test_weights_files_store_no_machine_path(name):
    state = torch.load(os.path.join(REPO_ROOT, 'weights', name), map_location='cpu', weights_only=True)
    found = [text for text in _strings(state) if MACHINE_PATH.search(text)]
    assert not found, found[:3]
