"""The pieces the run report is built of: escaped text, numbers as cells, table headers, files read
leniently (a missing or garbled file leaves its part out of the page, it never stops the page)."""
import csv
import html
import math

from records.record_io import load_json


def esc(value):
    """``value`` as text safe in HTML (attributes included)."""
    return html.escape(str(value), quote=True)


def read_json(path):
    """The parsed JSON file, or None when it is missing or unreadable."""
    try:
        return load_json(path)
    except (OSError, ValueError):
        return None


def read_metrics(path):
    """metrics.csv -> (columns, rows); each row is a dict of the raw strings. ([], []) when absent."""
    try:
        with open(path, newline='', encoding='utf-8') as handle:
            reader = csv.DictReader(handle)
            rows = [row for row in reader if row.get('name')]
            return list(reader.fieldnames or []), rows
    except (OSError, ValueError, csv.Error):
        return [], []


def to_number(text):
    """A float from a number or its text; NaN when there is none."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def fmt(value):
    """Numbers up to 1 (scores) with 4 decimals, larger ones with 6 significant digits; None and NaN
    as blank (a cell that does not apply stays empty, never 'nan')."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ''
    if isinstance(value, float):
        return f'{value:.4f}' if abs(value) <= 1 else f'{value:.6g}'
    return str(value)


def num_cell(value, text=None):
    """A table cell for a number given as int, float or CSV string, shown as ``text`` (default: whole
    numbers as they are, others by ``fmt``); its sort key goes in data-v."""
    number = to_number(value)
    if math.isnan(number):
        return '<td data-v=""></td>'
    if text is None:
        text = str(value) if isinstance(value, int) else fmt(number)
    return f'<td data-v="{number!r}">{esc(text)}</td>'


def name_cell(name):
    """A left-aligned text cell that sorts by its own text."""
    return f'<td class="name" data-v="{esc(name)}">{esc(name)}</td>'


def header(columns, sorted_by=None, direction='asc'):
    """<thead>; columns are (title, type) with type 'num', 'text' or None (not sortable); the column
    titled ``sorted_by`` is marked as sorted in ``direction``."""
    cells = []
    for title, kind in columns:
        attributes = f' data-type="{kind}"' if kind else ''
        attributes += f' data-dir="{direction}"' if title == sorted_by else ''
        attributes += ' class="name"' if kind == 'text' else ''
        cells.append(f'<th{attributes}>{esc(title)}</th>')
    return '<thead><tr>' + ''.join(cells) + '</tr></thead>'


def text_row(cells):
    """A <tr> of plain text cells."""
    return '<tr>' + ''.join(f'<td>{esc(cell)}</td>' for cell in cells) + '</tr>'
