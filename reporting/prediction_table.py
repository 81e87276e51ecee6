"""predict.py's outputs about all files: OUTPUT/predictions.csv (one row per input file, nothing else, so
that a table reader gets numeric columns) and OUTPUT/predictions_summary.json (the counts and, with labels,
the mean scores), and the same summary for the console."""
import csv
import io
import os

import numpy as np

from data.image_io import write_json_atomic, write_text_atomic
from evaluation.metrics import SCORE_NAMES

COLUMNS = ('file', 'kind', 'status', 'input_check', 'mask', 'lesion_score', 'lesion', 'lesion_px', 'lesion_fraction',
           'lesion_ml')
SUMMARY = 'predictions_summary.json'


def _cell(value):
    if value is None:
        return ''
    return f'{value:.6g}' if isinstance(value, float) else value


def summarise(rows, files):
    """The facts of predictions_summary.json: counts of the ``files`` inputs by outcome (``complete`` False when a
    stop left some without a row), and the mean scores over the labelled ones (with ``scored``: how many)."""
    done = [row for row in rows if row['status'] == 'ok']
    with_scores = [row for row in done if 'DI' in row]
    return {'complete': len(rows) == files, 'files': files, 'predicted': len(done),
            'images': sum(row['kind'] == 'image' for row in done),
            'volumes': sum(row['kind'] == 'volume' for row in done),
            'with_lesion': sum(row.get('lesion', 0) for row in done),
            'with_input_warning': sum(bool(row.get('input_check')) for row in done),
            'refused': sum(row['status'].startswith('refused') for row in rows),
            'skipped': sum(row['status'].startswith('skipped') for row in rows),
            'scored': len(with_scores),
            'mean': {name: float(np.mean([row[name] for row in with_scores])) for name in SCORE_NAMES}
            if with_scores else {}}


def _console(summary, rows, path):
    """The summary of ``rows`` as console lines."""
    lines = [f"{summary['predicted']} of {summary['files']} files predicted ({summary['images']} images, "
             f"{summary['volumes']} volumes), {summary['with_lesion']} with a lesion, "
             f"{summary['with_input_warning']} with an input warning; {summary['refused']} refused, "
             f"{summary['skipped']} skipped"
             + ('' if summary['complete'] else f"; stopped before the other {summary['files'] - len(rows)}")]
    if summary['mean']:
        lines.append(f"mean over {summary['scored']} labelled: "
                     + ' '.join(f'{k} {v:.4f}' for k, v in summary['mean'].items()))
    folder = os.path.dirname(path) or '.'
    lines.append(f'masks (<name>_mask.png / .nii.gz) in {folder}, one row per file in {path}, the counts and means '
                 f'in {os.path.join(folder, SUMMARY)}')
    return '\n'.join(lines)


def write_predictions(path, rows, scored, files):
    """Write ``rows`` (dicts with COLUMNS, and SCORE_NAMES when ``scored``) of ``files`` inputs as CSV at
    ``path`` and their summary beside it as SUMMARY, atomically; returns the summary's console lines.

    ``lesion_px`` counts pixels of an image or voxels of a volume; ``lesion_ml`` is the volume's lesion in mL;
    ``input_check`` says how an input differs from the weights' training data ('' when it does not).
    """
    columns = COLUMNS + (SCORE_NAMES if scored else ())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval='', extrasaction='ignore', lineterminator='\n')
    writer.writeheader()
    writer.writerows({key: _cell(row.get(key)) for key in columns} for row in rows)
    write_text_atomic(path, text.getvalue())
    summary = summarise(rows, files)
    write_json_atomic(os.path.join(os.path.dirname(path), SUMMARY), summary)
    return _console(summary, rows, path)
