"""The run report: one self-contained ``index.html`` per run, rebuilt from what is on disk.

``write_run_report(run_dir)`` reads ``run_dir/test/<split>/`` and ``run_dir/crf/<split>/`` (summary.json,
metrics.csv, overlays/, translation/, cam/; any of them may be missing) and writes ``run_dir/index.html``:
a summary table, the choices made on val, the command lines, a sortable per-image table per split (worst
DI first) and a CRF before/after table per split. test.py and crf.py both call it at their end, so the
page always shows everything the run has produced so far.

The page opens from disk (file://): every link is relative, CSS and JS are inline, nothing is fetched
from the network. All text from disk is escaped.
"""
import csv
import html
import json
import math
import os
import shlex
import time
import urllib.parse

from util.atomic import atomic_write

SCORES = ('JA', 'DI', 'AC', 'SE', 'SP')
COUNTS = ('TP', 'FP', 'FN', 'TN')
KNOWN_SPLITS = ('val', 'testA', 'testB')
# (folder, column title) of the thumbnails in a per-image table; prob/ is 16-bit and shows badly.
THUMBNAILS = (('overlays', 'overlay'), ('translation', 'translation'), ('cam', 'CAM'))
# Optional summary keys shown as extra columns when any summary has them.
EXTRA_SUMMARY_KEYS = (('auc', 'AUC A vs B'), ('fp_rate', 'FP rate'), ('mean_area', 'mean area'),
                      ('images_per_second', 'images/s'))
THUMB_WIDTH = 128

STYLE = """
body { font: 14px sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: middle; }
td.name, th.name { text-align: left; }
th[data-type] { cursor: pointer; background: #eef; }
th[data-dir=asc]::after { content: ' \\25B2'; }
th[data-dir=desc]::after { content: ' \\25BC'; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; }
img { display: block; }
"""

# Sorts a table by the clicked header; each cell carries its sort key in data-v, NaN/blank sort last.
SCRIPT = """
document.querySelectorAll('table.sortable th[data-type]').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
    var numeric = th.dataset.type === 'num', dir = th.dataset.dir === 'asc' ? -1 : 1;
    table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || '', y = b.cells[col].dataset.v || '';
      if (!numeric) return dir * x.localeCompare(y);
      x = parseFloat(x); y = parseFloat(y);
      if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);
      return dir * (x - y);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def _esc(value):
    return html.escape(str(value), quote=True)


def _read_json(path):
    """The parsed JSON file, or None when it is missing or unreadable (the report must still render)."""
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _to_number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _read_metrics(path):
    """metrics.csv -> (columns, rows); each row is a dict of the raw strings. ([], []) when absent."""
    try:
        with open(path, newline='', encoding='utf-8') as handle:
            reader = csv.DictReader(handle)
            rows = [row for row in reader if row.get('name')]
            return list(reader.fieldnames or []), rows
    except (OSError, ValueError, csv.Error):  # a missing or garbled file: show the split without it
        return [], []


def _fmt(value):
    """Numbers up to 1 (scores) with 4 decimals, larger ones with 6 significant digits; None as blank."""
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.4f}' if math.isnan(value) or abs(value) <= 1 else f'{value:.6g}'
    return str(value)


def _num_cell(value):
    """A table cell for a number given as float or CSV string; its sort key goes in data-v."""
    number = _to_number(value)
    if math.isnan(number):
        return f'<td data-v="">{_esc("" if value is None else value)}</td>'
    return f'<td data-v="{number!r}">{_fmt(number)}</td>'


def _sort_key(row, column):
    """Ascending by `column`, rows without a number last (worst-first for scores)."""
    number = _to_number(row.get(column))
    return (math.isnan(number), number)


def _image_path(run_dir, folder, name):
    """Path of NAME's PNG in `folder` relative to run_dir, or None; tolerates names that keep an extension."""
    for filename in (name + '.png', os.path.splitext(name)[0] + '.png'):
        if os.path.isfile(os.path.join(run_dir, folder, filename)):
            return f'{folder}/{filename}'
    return None


def _thumbnail(relative_path, alt):
    """A lazy-loaded thumbnail linking to the full image, or an empty cell."""
    if relative_path is None:
        return '<td></td>'
    url = _esc(urllib.parse.quote(relative_path))
    return (f'<td><a href="{url}"><img src="{url}" loading="lazy" width="{THUMB_WIDTH}" '
            f'alt="{_esc(alt)}"></a></td>')


def _splits(parent):
    """Split folders under `parent`: val, testA, testB first, then any other in name order."""
    if not os.path.isdir(parent):
        return []
    present = sorted(entry for entry in os.listdir(parent) if os.path.isdir(os.path.join(parent, entry)))
    return [s for s in KNOWN_SPLITS if s in present] + [s for s in present if s not in KNOWN_SPLITS]


def _header(columns, sorted_by=None):
    """<thead>; columns are (title, type) with type 'num', 'text' or None (not sortable)."""
    cells = []
    for title, kind in columns:
        attributes = f' data-type="{kind}"' if kind else ''
        attributes += ' data-dir="asc"' if title == sorted_by else ''
        attributes += ' class="name"' if kind == 'text' else ''
        cells.append(f'<th{attributes}>{_esc(title)}</th>')
    return '<thead><tr>' + ''.join(cells) + '</tr></thead>'


def _summary_section(summaries):
    """The table of every summary: one row per test split, before/after rows per CRF split."""
    extras = [(key, title) for key, title in EXTRA_SUMMARY_KEYS if any(key in s for _, _, s in summaries)]
    columns = [('stage', None), ('split', None), ('values', None)] + [(k, None) for k in SCORES]
    columns += [('n', None), ('thresholded JA', None)] + [(title, None) for _, title in extras]
    rows = []
    for stage, split, summary in summaries:
        variants = [('mean' if stage == 'test' else 'after CRF (mean)', summary)]
        if isinstance(summary.get('pooled'), dict):
            variants.append(('pooled' if stage == 'test' else 'after CRF (pooled)', summary['pooled']))
        if stage == 'crf' and isinstance(summary.get('before'), dict):
            variants.insert(0, ('before CRF (mean)', summary['before']))
        for label, values in variants:
            cells = [stage, split, label] + [_fmt(values.get(k)) for k in SCORES]
            cells += [_fmt(summary.get('n_images')), _fmt(values.get('thresholded_JA'))]
            # Detection and speed belong to the split, not to one way of averaging: show them once.
            cells += [_fmt(summary.get(key)) if values is summary else '' for key, _ in extras]
            rows.append('<tr>' + ''.join(f'<td>{_esc(c)}</td>' for c in cells) + '</tr>')
    return ('<h2 id="summary">Summary</h2><table>' + _header(columns) + '<tbody>' + ''.join(rows)
            + '</tbody></table>')


def _command_text(command):
    """A command saved as an argv list or as one string -> one shell line."""
    if isinstance(command, (list, tuple)):
        return shlex.join(str(part) for part in command)
    return str(command)


def _selection_section(summaries):
    """Every choice made on val (pretty-printed, once per distinct choice) and each command line."""
    splits_by_selection = {}
    for stage, split, summary in summaries:
        selection = json.dumps(summary.get('selection', {}), indent=2, sort_keys=True, default=str)
        splits_by_selection.setdefault(selection, []).append(f'{stage} / {split}')
    parts = ['<h2 id="selection">Choices made on val</h2>']
    for selection, labels in splits_by_selection.items():
        parts.append(f'<h3>{_esc(", ".join(labels))}</h3><pre>{_esc(selection)}</pre>')
    parts.append('<h2 id="commands">Command lines</h2>')
    for stage, split, summary in summaries:
        if summary.get('command'):
            parts.append(f'<p>{_esc(stage)} / {_esc(split)}:</p>'
                         f'<pre>{_esc(_command_text(summary["command"]))}</pre>')
    return ''.join(parts)


def _split_section(run_dir, split):
    """Per-image table of test/<split>: thumbnails and every score column, worst DI first."""
    base = f'test/{split}'
    columns, rows = _read_metrics(os.path.join(run_dir, base, 'metrics.csv'))
    folders = [(f'{base}/{folder}', title) for folder, title in THUMBNAILS
               if os.path.isdir(os.path.join(run_dir, base, folder))]
    if not rows and folders:  # testB may have images but no metrics.csv
        names = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(run_dir, folders[0][0]))
                 if f.endswith('.png')}
        rows = [{'name': name} for name in sorted(names)]
    if not rows:
        return ''
    values = [c for c in columns if c not in ('name',) + COUNTS]
    if 'DI' in values:
        rows = sorted(rows, key=lambda row: _sort_key(row, 'DI'))
    header = _header([('name', 'text')] + [(title, None) for _, title in folders]
                     + [(c, 'num') for c in values], sorted_by='DI')
    body = []
    for row in rows:
        name = row['name']
        cells = [f'<td class="name" data-v="{_esc(name)}">{_esc(name)}</td>']
        cells += [_thumbnail(_image_path(run_dir, folder, name), f'{title} {name}') for folder, title in folders]
        cells += [_num_cell(row.get(c)) for c in values]
        body.append('<tr>' + ''.join(cells) + '</tr>')
    return (f'<h2 id="test-{_esc(split)}">{_esc(split)}: per image ({len(rows)})</h2>'
            '<p>Click a column header to sort; the table starts with the worst DI.</p>'
            f'<table class="sortable">{header}<tbody>' + ''.join(body) + '</tbody></table>')


def _crf_section(run_dir, split):
    """Per-image CRF before/after of <split>: test overlay next to CRF overlay, DI before and after."""
    _, after_rows = _read_metrics(os.path.join(run_dir, 'crf', split, 'metrics.csv'))
    if not after_rows:
        return ''
    _, before_rows = _read_metrics(os.path.join(run_dir, 'test', split, 'metrics.csv'))
    before_di = {row['name']: _to_number(row.get('DI')) for row in before_rows}
    header = _header([('name', 'text'), ('test overlay', None), ('CRF overlay', None), ('DI before', 'num'),
                      ('DI after', 'num'), ('change', 'num')], sorted_by='DI after')
    body = []
    for row in sorted(after_rows, key=lambda row: _sort_key(row, 'DI')):
        name = row['name']
        before, after = before_di.get(name, math.nan), _to_number(row.get('DI'))
        cells = [f'<td class="name" data-v="{_esc(name)}">{_esc(name)}</td>',
                 _thumbnail(_image_path(run_dir, f'test/{split}/overlays', name), f'test {name}'),
                 _thumbnail(_image_path(run_dir, f'crf/{split}/overlays', name), f'CRF {name}'),
                 _num_cell(before), _num_cell(after), _num_cell(after - before)]
        body.append('<tr>' + ''.join(cells) + '</tr>')
    return (f'<h2 id="crf-{_esc(split)}">{_esc(split)}: CRF before / after ({len(after_rows)})</h2>'
            f'<table class="sortable">{header}<tbody>' + ''.join(body) + '</tbody></table>')


def write_run_report(run_dir):
    """Rebuild ``run_dir/index.html`` from the run's test/ and crf/ outputs; returns the page's path.

    run_dir: <result_dir>/<dataset>/<folder>/<name> (see docs/DESIGN.md). Missing splits, files or image
    folders are left out of the page; a run with no results yet gets a page saying so.
    """
    run_dir = os.path.abspath(run_dir)
    name = os.path.basename(run_dir)
    folder = os.path.dirname(run_dir)
    dataset = f'{os.path.basename(os.path.dirname(folder))} / {os.path.basename(folder)}'
    summaries = []
    for stage in ('test', 'crf'):
        for split in _splits(os.path.join(run_dir, stage)):
            summary = _read_json(os.path.join(run_dir, stage, split, 'summary.json'))
            if isinstance(summary, dict):
                summaries.append((stage, split, summary))
    sections = [_split_section(run_dir, s) for s in _splits(os.path.join(run_dir, 'test'))]
    sections += [_crf_section(run_dir, s) for s in _splits(os.path.join(run_dir, 'crf'))]
    body = []
    if summaries:
        body += [_summary_section(summaries), _selection_section(summaries)]
    body += [s for s in sections if s]
    if not body:
        body.append('<p>No results yet: run test.py (and crf.py) for this run.</p>')
    title = f'CLTNet-Seg report: {name} ({dataset})'
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>{_esc(title)}</title><style>{STYLE}</style></head><body>'
            f'<h1>{_esc(title)}</h1><p>Page generated {_esc(time.strftime("%Y-%m-%d %H:%M:%S"))} '
            'from the files in this folder.</p>' + ''.join(body)
            + f'<script>{SCRIPT}</script></body></html>\n')
    path = os.path.join(run_dir, 'index.html')
    atomic_write(path, lambda handle: handle.write(page), encoding='utf-8')
    return path
