"""The run report: one self-contained ``index.html`` per run, rebuilt from what is on disk.

``write_run_report(run_dir)`` reads ``run_dir/test/<split>/`` and ``run_dir/crf/<split>/`` (summary.json,
metrics.csv, masks/, overlays/, translation/, cam/; any of them may be missing) and the decisions recorded
in test/selection.json and crf/selection.json, and writes ``run_dir/index.html``: a legend of the images,
a summary table, the choices made on val (reporting/report_choices.py), a sortable per-image table per split
(worst first) and a CRF before/after table per split, then the command lines. Every table says what its
columns mean (reporting/report_glossary.py). test.py and crf.py both call it at their end, so the page always
shows everything the run has produced so far.

The page opens from disk (file://): every link is relative, CSS and JS are inline, nothing is fetched
from the network. All text from disk is escaped.
"""
import math
import os
import shlex
import time
import urllib.parse

from data.image_io import ImageReadError, read_mask
from records.run_folder import (image_folder, image_path, metrics_path, report_path, split_folder, stage_folder,
                                summary_path)
from util.atomic import atomic_write
from reporting.overlay import GT_COLOUR, PRED_COLOUR
from reporting.report_cells import esc, fmt, header, name_cell, num_cell, read_json, read_metrics, text_row, to_number
from reporting.report_choices import choices_section
from reporting.report_glossary import EMPTY_CELLS, explain

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
body { font: 14px sans-serif; margin: 1.5em; color: #222; max-width: 100em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: middle; }
td.name, th.name, #choices td, #summary + table td:nth-child(-n+3) { text-align: left; }
#choices td:first-child { white-space: nowrap; }
th[data-type] { cursor: pointer; background: #eef; }
th[data-dir=asc]::after { content: ' \\25B2'; }
th[data-dir=desc]::after { content: ' \\25BC'; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; white-space: pre-wrap; }
img { display: block; }
ul.help { color: #555; margin: 0 0 1.5em; columns: 2 30em; }
#legend { background: #f6f6f6; padding: 0.5em 0.8em; }
.swatch { display: inline-block; width: 1.6em; height: 0.9em; border: 3px solid; vertical-align: middle; }
.warning { color: #a00; }
details { margin: 0 0 1.5em; }
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


def _image_path(run_dir, split_dir, kind, name):
    """Path of NAME's PNG of `kind` in `split_dir` relative to run_dir (the page's link), or None; tolerates
    names that keep an extension."""
    for stem in (name, os.path.splitext(name)[0]):
        path = image_path(split_dir, kind, stem)
        if os.path.isfile(path):
            return os.path.relpath(path, run_dir).replace(os.sep, '/')
    return None


def _thumbnail(relative_path, alt):
    """A lazy-loaded thumbnail linking to the full image, or an empty cell."""
    if relative_path is None:
        return '<td></td>'
    url = esc(urllib.parse.quote(relative_path))
    return (f'<td><a href="{url}"><img src="{url}" loading="lazy" width="{THUMB_WIDTH}" '
            f'alt="{esc(alt)}"></a></td>')


def _mask_area(run_dir, split_dir, name):
    """Share of the pixels of NAME's mask in `split_dir` marked lesion; NaN when there is no readable mask."""
    path = _image_path(run_dir, split_dir, 'masks', name)
    try:
        return float(read_mask(os.path.join(run_dir, path)).mean()) if path else math.nan
    except ImageReadError:
        return math.nan


def _splits(parent):
    """Split folders under `parent`: val, testA, testB first, then any other in name order."""
    if not os.path.isdir(parent):
        return []
    present = sorted(entry for entry in os.listdir(parent) if os.path.isdir(os.path.join(parent, entry)))
    return [s for s in KNOWN_SPLITS if s in present] + [s for s in present if s not in KNOWN_SPLITS]


def _is_normal(split, summary):
    """True for a split of normal, unlabelled images (testB): its summary has detection figures, not scores."""
    if summary:
        return 'fp_rate' in summary and 'DI' not in summary
    return split == 'testB'


def _legend():
    def swatch(colour):
        return f'<span class="swatch" style="border-color: rgb{tuple(colour)}"></span>'
    return (f'<p id="legend"><b>Reading the images.</b> {swatch(PRED_COLOUR)} green outline: the prediction '
            f'(the mask test.py or crf.py wrote) &nbsp; {swatch(GT_COLOUR)} red outline: the ground truth '
            "(the label; testB's normal images have none). translation: the image as the generator makes "
            'it look normal; CAM: where the classifier sees lesion (bright: more). Click a thumbnail for the '
            'full image.</p>')


def shows_thresholded_ja(dataset):
    """Whether the report shows ISIC's thresholded JA: for an ISIC dataset only (its name begins with ISIC, in
    any case); elsewhere the 0.65 cut is no convention and the column read as a score of 0."""
    return dataset.lower().startswith('isic')


def _summary_section(summaries, thresholded):
    """The table of every summary: mean and pooled rows per test split, before/after rows per CRF split; with
    ``thresholded``, ISIC's thresholded JA after n."""
    extras = [(key, title) for key, title in EXTRA_SUMMARY_KEYS if any(key in s for _, _, s in summaries)]
    if thresholded:
        extras.insert(0, ('thresholded_JA', 'thresholded JA'))
    titles = ['stage', 'split', 'values', *SCORES, 'n'] + [title for _, title in extras]
    rows = []
    for stage, split, summary in summaries:
        variants = [('mean' if stage == 'test' else 'after CRF (mean)', summary)]
        if isinstance(summary.get('pooled'), dict):
            variants.append(('pooled' if stage == 'test' else 'after CRF (pooled)', summary['pooled']))
        if stage == 'crf' and isinstance(summary.get('before'), dict):
            variants.insert(0, ('before CRF (mean)' if 'DI' in summary['before'] else 'before CRF',
                                summary['before']))
        for label, values in variants:
            cells = [stage, split, label] + [fmt(values.get(k)) for k in SCORES] + [fmt(summary.get('n_images'))]
            # Detection and speed belong to the split, not to one way of averaging: shown once, but for
            # the figures before the CRF (each variant has its own thresholded JA).
            cells += [fmt(values.get(key, summary.get(key) if values is summary else None)) for key, _ in extras]
            rows.append(text_row(cells))
    return ('<h2 id="summary">Summary</h2><table>' + header([(title, None) for title in titles]) + '<tbody>'
            + ''.join(rows) + '</tbody></table>' + explain(titles, EMPTY_CELLS))


def _command_text(command):
    """A command saved as an argv list or as one string -> one shell line."""
    if isinstance(command, (list, tuple)):
        return shlex.join(str(part) for part in command)
    return str(command)


def _commands_section(summaries):
    """Each distinct command line once, with the splits it wrote."""
    splits_by_command = {}
    for stage, split, summary in summaries:
        if summary.get('command'):
            splits_by_command.setdefault(_command_text(summary['command']), []).append(f'{stage} / {split}')
    parts = [f'<p>{esc(", ".join(labels))}:</p><pre>{esc(command)}</pre>'
             for command, labels in splits_by_command.items()]
    return '<h2 id="commands">Command lines</h2>' + ''.join(parts) if parts else ''


def _image_table(run_dir, rows, thumbnails, columns, sort_by, direction):
    """A sortable per-image table. rows: [(name, {column: value})], already in order; thumbnails:
    [(split folder, kind of image, title)]; columns: the value columns, in order."""
    head = header([('name', 'text')] + [(title, None) for _, _, title in thumbnails] + [(c, 'num') for c in columns],
                  sorted_by=sort_by, direction=direction)
    body = []
    for name, values in rows:
        cells = [name_cell(name)]
        cells += [_thumbnail(_image_path(run_dir, split_dir, kind, name), f'{title} {name}')
                  for split_dir, kind, title in thumbnails]
        cells += [num_cell(values.get(c)) for c in columns]
        body.append('<tr>' + ''.join(cells) + '</tr>')
    return f'<table class="sortable images">{head}<tbody>' + ''.join(body) + '</tbody></table>'


def _ordered(rows, column, largest_first=False):
    """Rows sorted by `column`, rows without a number last."""
    def key(row):
        number = to_number(row[1].get(column))
        return (math.isnan(number), -number if largest_first else number)
    return sorted(rows, key=key)


def _image_names(folders):
    """Names of the PNGs in the first of `folders` that exists (for a split without metrics.csv)."""
    for folder in folders:
        if os.path.isdir(folder):
            return sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith('.png'))
    return []


def _split_section(run_dir, split, normal):
    """Per-image table of test/<split>: thumbnails and every score column, worst first; a split of normal
    images (testB) has no labels and gets each mask's lesion area instead, largest first."""
    base = split_folder(run_dir, 'test', split)
    thumbnails = [(base, kind, title) for kind, title in THUMBNAILS if os.path.isdir(image_folder(base, kind))]
    if normal:
        names = _image_names([image_folder(base, kind) for kind in ['masks'] + [kind for _, kind, _ in thumbnails]])
        rows = [(name, {'lesion area': _mask_area(run_dir, base, name)}) for name in names]
        columns, sort_by, largest_first = ['lesion area'], 'lesion area', True
        intro = (f'{split} holds normal images (no lesion, no label): a good mask is empty, so a good lesion area '
                 'is 0 and no green outline shows. Largest area first; click a column header to sort.')
    else:
        found, metrics = read_metrics(metrics_path(base))
        rows = [(row['name'], row) for row in metrics]
        columns = [c for c in found if c not in ('name',) + COUNTS]
        sort_by, largest_first = 'DI', False
        intro = 'Each image against its label; worst DI first. Click a column header to sort.'
    if not rows:
        return ''
    table = _image_table(run_dir, _ordered(rows, sort_by, largest_first), thumbnails, columns, sort_by,
                         'desc' if largest_first else 'asc')
    return (f'<h2 id="test-{esc(split)}">{esc(split)}: per image ({len(rows)})</h2><p>{esc(intro)}</p>'
            + explain(columns) + table)


def _crf_section(run_dir, split, normal):
    """Per-image CRF before/after of <split>: test overlay next to CRF overlay, DI before and after (lesion
    area before and after for normal images)."""
    tested, refined = split_folder(run_dir, 'test', split), split_folder(run_dir, 'crf', split)
    if normal:
        names = _image_names([image_folder(refined, 'masks')])
        titles = ('area before', 'area after', 'change')
        pairs = [(name, _mask_area(run_dir, tested, name), _mask_area(run_dir, refined, name)) for name in names]
        intro = (f"{split}'s images are normal: the CRF should leave their masks empty (area 0). Largest area "
                 'after the CRF first.')
    else:
        _, after_rows = read_metrics(metrics_path(refined))
        _, before_rows = read_metrics(metrics_path(tested))
        before_di = {row['name']: to_number(row.get('DI')) for row in before_rows}
        titles = ('DI before', 'DI after', 'change')
        pairs = [(row['name'], before_di.get(row['name'], math.nan), to_number(row.get('DI'))) for row in after_rows]
        intro = 'Worst DI after the CRF first.'
    if not pairs:
        return ''
    rows = [(name, dict(zip(titles, (before, after, after - before)))) for name, before, after in pairs]
    thumbnails = [(tested, 'overlays', 'test overlay'), (refined, 'overlays', 'CRF overlay')]
    table = _image_table(run_dir, _ordered(rows, titles[1], largest_first=normal), thumbnails, titles, titles[1],
                         'desc' if normal else 'asc')
    return (f'<h2 id="crf-{esc(split)}">{esc(split)}: CRF before / after ({len(rows)})</h2><p>{esc(intro)}</p>'
            + explain(titles) + table)


def write_run_report(run_dir):
    """Rebuild ``run_dir/index.html`` from the run's test/ and crf/ outputs; returns the page's path.

    run_dir: <result_dir>/<dataset>/<folder>/<name> (see docs/DESIGN.md). Missing splits, files or image
    folders are left out of the page; a run with no results yet gets a page saying so.
    """
    run_dir = os.path.abspath(run_dir)
    name = os.path.basename(run_dir)
    folder = os.path.dirname(run_dir)
    dataset_name = os.path.basename(os.path.dirname(folder))
    dataset = f'{dataset_name} / {os.path.basename(folder)}'
    by_split = {}
    for stage in ('test', 'crf'):
        for split in _splits(stage_folder(run_dir, stage)):
            by_split[stage, split] = read_json(summary_path(split_folder(run_dir, stage, split)))
    summaries = [(stage, split, s) for (stage, split), s in by_split.items() if isinstance(s, dict)]

    def normal(split):
        return _is_normal(split, by_split.get(('test', split)) or by_split.get(('crf', split)))
    sections = [_split_section(run_dir, s, normal(s)) for s in _splits(stage_folder(run_dir, 'test'))]
    sections += [_crf_section(run_dir, s, normal(s)) for s in _splits(stage_folder(run_dir, 'crf'))]
    body = [_summary_section(summaries, shows_thresholded_ja(dataset_name))] if summaries else []
    body += [choices_section(run_dir, summaries)] + sections + [_commands_section(summaries)]
    body = [part for part in body if part]
    if not body:
        body.append('<p>No results yet: run test.py (and crf.py) for this run.</p>')
    elif sections:
        body.insert(0, _legend())
    title = f'CLTNet-Seg report: {name} ({dataset})'
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>{esc(title)}</title><style>{STYLE}</style></head><body>'
            f'<h1>{esc(title)}</h1><p>Page generated {esc(time.strftime("%Y-%m-%d %H:%M:%S"))} '
            'from the files in this folder.</p>' + ''.join(body)
            + f'<script>{SCRIPT}</script></body></html>\n')
    path = report_path(run_dir)
    atomic_write(path, lambda handle: handle.write(page), encoding='utf-8')
    return path
