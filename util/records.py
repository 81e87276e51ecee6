"""The records the stages leave for each other, so they compose without reaching into each other.

test.py writes its decision (checkpoint, map, threshold, post-processing) to <run>/test/selection.json
and crf.py its own (the CRF parameters, and which test.py record they refine) to
<run>/crf/selection.json, whichever splits they scored. pseudo.py, tools/export_weights.py,
tools/benchmark.py and pipeline.py read only these (and weights files). docs/DESIGN.md lists them.
"""
import hashlib
import json
import os

from data.image_io import write_json_atomic

SELECTION_RECORD = 'selection.json'


def test_record_path(run):
    return os.path.join(run, 'test', SELECTION_RECORD)


def crf_record_path(run):
    return os.path.join(run, 'crf', SELECTION_RECORD)


def read_record(path):
    """The record at ``path``, {} when there is none."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def write_record(path, record, command):
    """Write ``record`` with the command that made it, atomically. No time stamp: the same decision
    gives the same bytes, so a later step can tell by its hash whether its input changed."""
    write_json_atomic(path, {**record, 'command': command})


def require_record(path, hint):
    """The record at ``path``; exit with one line ending in ``hint`` (which step to run) when it is
    missing."""
    record = read_record(path)
    if not record:
        raise SystemExit(f'error: {path} not found: {hint}')
    return record


def file_sha256(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
