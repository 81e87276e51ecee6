"""predict.py's OUTPUT/predictions.csv: one row per input file, and the mean scores when labels were given."""
import csv
import io
import os

import numpy as np

from data.image_io import write_text_atomic
from util.metrics import SCORE_NAMES

COLUMNS = ('file', 'kind', 'status', 'mask', 'lesion_score', 'lesion', 'lesion_px', 'lesion_fraction', 'lesion_ml')
MEAN_ROW = 'mean'


def _cell(value):
    if value is None:
        return ''
    return f'{value:.6g}' if isinstance(value, float) else value


def write_predictions(path, rows, scored):
    """Write ``rows`` (dicts with COLUMNS, and SCORE_NAMES when ``scored``) as CSV at ``path`` atomically, with
    a last row ``mean`` of the scores over the rows that have them; returns a one-line-per-fact summary.

    ``lesion_px`` counts pixels of an image or voxels of a volume; ``lesion_ml`` is the volume's lesion in mL.
    """
    columns = COLUMNS + (SCORE_NAMES if scored else ())
    with_scores = [row for row in rows if 'DI' in row]
    table = [{key: _cell(row.get(key)) for key in columns} for row in rows]
    means = {name: float(np.mean([row[name] for row in with_scores])) for name in SCORE_NAMES} if with_scores else {}
    if scored:
        table.append({'file': MEAN_ROW, 'status': f'{len(with_scores)} scored', **{k: _cell(v) for k, v in means.items()}})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval='', lineterminator='\n')
    writer.writeheader()
    writer.writerows(table)
    write_text_atomic(path, text.getvalue())
    done = [row for row in rows if row['status'] == 'ok']
    kinds = {kind: sum(row['kind'] == kind for row in done) for kind in ('image', 'volume')}
    lines = [f"{len(done)} of {len(rows)} files predicted ({kinds['image']} images, {kinds['volume']} volumes), "
             f"{sum(row.get('lesion', 0) for row in done)} with a lesion; {len(rows) - len(done)} skipped"]
    if means:
        lines.append(f'mean over {len(with_scores)} labelled: ' + ' '.join(f'{k} {v:.4f}' for k, v in means.items()))
    lines.append(f'masks (<name>_mask.png / .nii.gz) in {os.path.dirname(path) or "."}, one row per file in {path}')
    return '\n'.join(lines)
