"""predict.py's record of its finished files in --output (predict_manifest.jsonl), so that the same command
run again after Ctrl-C, a kill or a full disk continues where it stopped (as nnU-Net's --continue_prediction):
a file whose input, weights and result-changing flags are unchanged and whose outputs all exist is not
predicted again.

Records are per output name (the input's path under --input without its extension), one JSON line per
event, appended and flushed: ``started`` before a file's outputs are written, ``done`` with its
predictions.csv row after. A kill leaves at most a torn last line, which is ignored; an output recorded as
``started`` with the same key is this command's own half-done work, redone without --overwrite.
"""
import argparse
import hashlib
import json
import os
from typing import Optional

MANIFEST = 'predict_manifest.jsonl'
# Flags that change a mask; the rest (speed, which extra outputs, labels) do not.
KEY_FLAGS = ('crf', 'largest_3d', 'min_brain_frac')


def file_key(input_digest: str, weights_digest: str, opt: argparse.Namespace) -> str:
    """What a finished file's outputs were made from: its input's and the weights' bytes, the KEY_FLAGS."""
    made_from = {'input': input_digest, 'weights': weights_digest, **{flag: getattr(opt, flag) for flag in KEY_FLAGS}}
    return hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()[:32]


class Manifest:
    """The records of folder ``folder``; ``fresh`` (--overwrite) forgets those of earlier runs."""

    def __init__(self, folder: str, fresh: bool):
        self.path = os.path.join(folder, MANIFEST)
        self.existed, self.torn = os.path.isfile(self.path), False
        self.records = {} if fresh else self._read()
        self.fresh = fresh

    def _read(self):
        """{output name: its last record}; a line that does not parse (a kill mid-write) is left out."""
        records = {}
        if not self.existed:
            return records
        with open(self.path, encoding='utf-8', errors='replace') as handle:
            lines = handle.read().split('\n')
        self.torn = lines[-1] != ''  # a kill mid-line: the next record starts on a line of its own
        for line in lines:
            try:
                record = json.loads(line)
                records[record['name']] = record
            except (ValueError, TypeError, KeyError):
                continue
        return records

    def state(self, name: str, key: str) -> Optional[str]:
        """'done' or 'started' when output ``name``'s last record has ``key``, 'other' when it has another, else
        None."""
        record = self.records.get(name)
        if record is None:
            return None
        return record.get('state') if record.get('key') == key else 'other'

    def done_row(self, name: str, key: str) -> Optional[dict]:
        """The predictions.csv row recorded for output ``name`` made with ``key``, else None."""
        row = self.records[name].get('row') if self.state(name, key) == 'done' else None
        return row if isinstance(row, dict) else None

    def start(self, name: str, key: str) -> None:
        self._append({'name': name, 'key': key, 'state': 'started'})

    def finish(self, name: str, key: str, row: dict) -> None:
        self._append({'name': name, 'key': key, 'state': 'done', 'row': row})

    def _append(self, record):
        """Add one line; the first write of a --overwrite run starts the file afresh. A full disk is an
        OSError naming the manifest (util.full_disk turns it into one line)."""
        mode = 'w' if self.fresh else 'a'
        try:
            os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
            with open(self.path, mode, encoding='utf-8') as handle:
                handle.write('\n' * (self.torn and mode == 'a') + json.dumps(record) + '\n')
                handle.flush()
        except OSError as error:
            raise OSError(error.errno, error.strerror, self.path) from error
        self.fresh = self.torn = False
        self.records[record['name']] = record
