"""The records the stages leave for each other, so they compose without reaching into each other.

test.py writes its decision (checkpoint, map, threshold, post-processing) to <run>/test/selection.json
and crf.py its own (the CRF parameters, and which test.py record they refine) to
<run>/crf/selection.json, whichever splits they scored. pseudo.py, tools/export_weights.py,
tools/benchmark.py and pipeline.py read only these (and weights files). docs/DESIGN.md lists them.
"""
import hashlib
import json
import os
from typing import Any, Callable, Optional, Sequence, Tuple

from data.image_io import write_json_atomic
from records.run_folder import PIPELINE_RECORD, PIPELINE_SNAPSHOT, STAGES


class RecordError(ValueError):
    """A record that is not the JSON object its script writes (truncated, damaged, edited); ``str()`` is one
    line naming the file and the fix."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f'{path} {problem}: delete it and run {writer_of(path)} again')


def writer_of(path: str) -> str:
    """The script that writes the record at ``path`` (by the folder it lies in), for the fix in an error."""
    if os.path.basename(path) in (PIPELINE_SNAPSHOT, PIPELINE_RECORD):
        return 'pipeline.py'
    for part in reversed(os.path.abspath(path).split(os.sep)[:-1]):
        if part in STAGES:
            return f'{part}.py'
    return 'the script that wrote it'


def load_json(path: str) -> Any:
    """The JSON value in the file at ``path``; OSError or ValueError (JSONDecodeError, UnicodeDecodeError) as
    reading and parsing raise them, for callers with their own rule (read_record's is the strict one)."""
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def read_record(path: str) -> dict:
    """The record at ``path``, {} when there is none; RecordError when it is not a readable JSON object."""
    if not os.path.isfile(path):
        return {}
    try:
        record = load_json(path)
    except ValueError as error:  # JSONDecodeError (a truncated file), UnicodeDecodeError
        raise RecordError(path, f'is not readable JSON ({type(error).__name__}: {error})') from None
    if not isinstance(record, dict):
        raise RecordError(path, f'holds a JSON {type(record).__name__}, not the object its script writes')
    return record


def write_record(path: str, record: dict, command: str) -> None:
    """Write ``record`` with the command that made it, atomically. No time stamp: the same decision
    gives the same bytes, so a later step can tell by its hash whether its input changed."""
    write_json_atomic(path, {**record, 'command': command})


def require_record(path: str, hint: str) -> dict:
    """The record at ``path``; exit with one line ending in ``hint`` (which step to run) when it is
    missing, and with RecordError's line when it is damaged."""
    try:
        record = read_record(path)
    except RecordError as error:
        raise SystemExit(f'error: {error}') from None
    if not record:
        raise SystemExit(f'error: {path} not found: {hint}')
    return record


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# (key, check, what it must be) of test.py's decision; 'checkpoint' is None for a model without one (otsu).
TEST_SELECTION_TYPES = (
    ('map_mode', lambda v: isinstance(v, str), 'a map name'),
    ('binarize', lambda v: v in ('fixed', 'otsu'), "'fixed' or 'otsu'"),
    ('threshold', lambda v: v is None or _is_number(v), 'a number (or null with otsu)'),
    ('postprocess', lambda v: isinstance(v, str), 'a post-processing name'),
    ('checkpoint', lambda v: v is None or isinstance(v, str), 'a file path'),
    ('gate', lambda v: v is None or isinstance(v, dict) and _is_number(v.get('threshold')),
     "null or {'threshold': number}"),
    ('crf', lambda v: v is None or isinstance(v, dict), 'an object of CRF parameters'),
    ('select_few', lambda v: isinstance(v, str), 'a folder name'),
    ('hold_out_normals', lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, 'a count'),
)
TEST_SELECTION_REQUIRED = ('map_mode', 'binarize', 'threshold', 'postprocess', 'checkpoint')
CRF_SELECTION_TYPES = (
    ('crf', lambda v: isinstance(v, dict), 'an object of CRF parameters'),
    ('val_DI_after', lambda v: v is None or _is_number(v), 'a number or null'),
    ('chosen_on', lambda v: isinstance(v, str), 'a text'),
)


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


# (key, check, what it must be) of one entry of a record's 'selection'
SelectionTypes = Sequence[Tuple[str, Callable[[Any], bool], str]]


def selection_problem(selection: Any, types: SelectionTypes, required: Sequence[str]) -> Optional[str]:
    """What is wrong with a record's 'selection' (``types``: (key, check, what)), or None."""
    if not isinstance(selection, dict):
        return "has no 'selection' object"
    missing = [key for key in required if key not in selection]
    if missing:
        return f"has a 'selection' without {', '.join(missing)}"
    for key, check, what in types:
        if key in selection and not check(selection[key]):
            return f"has 'selection' {key} {selection[key]!r}, expected {what}"
    if selection.get('binarize') == 'fixed' and selection.get('threshold') is None:
        return "has a 'fixed' binarisation without a threshold"
    return None


def _checked_selection(path, hint, types, required, record):
    record = require_record(path, hint) if record is None else record
    problem = selection_problem(record.get('selection'), types, required)
    if problem:
        raise SystemExit(f'error: {RecordError(path, problem)}')
    return record['selection']


def read_test_selection(path: str, hint: str, record: Optional[dict] = None) -> dict:
    """The checked 'selection' of test.py's record at ``path`` (``record``: already read); exit with one line
    naming the file and the fix when it is missing (``hint``), damaged or wrong-typed."""
    return _checked_selection(path, hint, TEST_SELECTION_TYPES, TEST_SELECTION_REQUIRED, record)


def read_crf_selection(path: str, hint: str, record: Optional[dict] = None) -> dict:
    """The checked 'selection' of crf.py's record at ``path``, as ``read_test_selection``."""
    return _checked_selection(path, hint, CRF_SELECTION_TYPES, ('crf',), record)
