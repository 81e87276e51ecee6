"""Tests for reporting/html.py: the run report rebuilt from a fake run folder of tiny files."""
import json
import os
import urllib.parse
from html.parser import HTMLParser

import pytest

from fake_run import CRF_CHOICE, EVIL_NAME, SELECTION, make_fake_run, write_json, write_png
from reporting.html import write_run_report
from reporting.overlay import GT_COLOUR, PRED_COLOUR


class PageParser(HTMLParser):
    """Collects every start tag with its attributes, and the rows of each table under the id before it (a
    table's own id, else the h2's): each row as its cells' data-v in ``tables``, as their text in ``texts``."""

    def __init__(self):
        super().__init__()
        self.tags, self.tables, self.texts = [], {}, {}
        self._heading, self._section, self._row, self._text = None, None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == 'h2':
            self._heading = self._section = attrs.get('id')
        elif tag == 'table' and attrs.get('id'):
            self._section = attrs['id']
        elif tag == 'tr':
            self._row, self._text = [], []
            self.tables.setdefault(self._section, []).append(self._row)
            self.texts.setdefault(self._section, []).append(self._text)
        elif tag in ('td', 'th') and self._row is not None:
            if tag == 'td':
                self._row.append(attrs.get('data-v'))
            self._text.append('')

    def handle_endtag(self, tag):
        if tag == 'tr':
            self._text = None
        elif tag == 'table':
            self._section, self._row = self._heading, None

    def handle_data(self, data):
        if self._text:
            self._text[-1] += data


def parse(path):
    parser = PageParser()
    with open(path, encoding='utf-8') as handle:
        parser.feed(handle.read())
    parser.close()
    return parser


@pytest.fixture
def run_dir(tmp_path):
    """results/ISIC/isic_1/demo: the fake run of fake_run.py."""
    return make_fake_run(tmp_path / 'results' / 'ISIC' / 'isic_1' / 'demo')


def test_report_is_self_contained_and_shows_the_summary(run_dir):
    path = write_run_report(run_dir)
    assert path == os.path.join(run_dir, 'index.html')
    text = open(path, encoding='utf-8').read()
    page = parse(path)
    images = [attrs for tag, attrs in page.tags if tag == 'img']
    # val and testB: 2 overlays each; testA: 3 x (overlay, translation, CAM); CRF: 3 + 2 x (test, crf).
    assert len(images) == 2 + 2 + 9 + 6 + 4
    for attrs in images:
        url = urllib.parse.urlsplit(attrs['src'])
        assert not url.scheme and not url.netloc and not url.path.startswith('/')
        assert os.path.isfile(os.path.join(run_dir, urllib.parse.unquote(url.path)))
        assert attrs['loading'] == 'lazy'
    assert 'http://' not in text and 'https://' not in text
    assert not any(tag in ('link', 'iframe') or attrs.get('src') for tag, attrs in page.tags if tag != 'img')
    assert 'demo' in text and 'ISIC' in text
    for number in ('0.6111', '0.5432', '0.6789', '0.9375', '0.1250', '12.5', 'iter_0000200.pt', 'sxy=40',
                   'python crf.py --name demo', 'test.py --name demo'):
        assert number in text


def test_rows_start_with_the_worst_dice(run_dir):
    tables = parse(write_run_report(run_dir)).tables
    # Column of DI in the testA table: name, 3 thumbnails, JA, DI, ...; the header row has no td.
    testa_di = [float(row[5]) for row in tables['test-testA'] if row]
    assert testa_di == [0.2, 0.6, 0.8]
    crf_after = [float(row[4]) for row in tables['crf-testA'] if row]
    assert crf_after == [0.1, 0.7, 0.85]
    # The change column is DI after minus DI before, matched by image name.
    assert [round(float(row[5]), 4) for row in tables['crf-testA'] if row] == [-0.1, 0.1, 0.05]


def test_second_call_regenerates_the_page(run_dir):
    path = write_run_report(run_dir)
    summary_path = os.path.join(run_dir, 'test', 'testA', 'summary.json')
    with open(summary_path) as handle:
        summary = json.load(handle)
    summary['JA'] = 0.1234
    with open(summary_path, 'w') as handle:
        json.dump(summary, handle)
    write_run_report(run_dir)
    text = open(path, encoding='utf-8').read()
    assert text.count('<html') == 1 and '0.1234' in text and '0.5432' not in text
    assert not [f for f in os.listdir(run_dir) if f.endswith('.tmp')]


def test_missing_parts_do_not_crash(tmp_path):
    run = tmp_path / 'ISIC' / 'isic_1' / 'empty'
    run.mkdir(parents=True)
    assert 'No results yet' in open(write_run_report(str(run)), encoding='utf-8').read()
    # testB with overlays only, a corrupt summary, an empty split folder, crf without metrics.
    write_png(str(run / 'test' / 'testB' / 'overlays' / 'b1.png'))
    (run / 'test' / 'val').mkdir()
    (run / 'test' / 'val' / 'summary.json').write_text('{not json')
    (run / 'crf' / 'testA').mkdir(parents=True)
    page = parse(write_run_report(str(run)))
    assert [attrs['src'] for tag, attrs in page.tags if tag == 'img'] == ['test/testB/overlays/b1.png']


def test_names_are_escaped(run_dir):
    path = write_run_report(run_dir)
    text = open(path, encoding='utf-8').read()
    assert EVIL_NAME not in text and '&lt;script&gt;x' in text
    assert [tag for tag, _ in parse(path).tags].count('script') == 1


def test_legend_names_the_outline_colours_of_the_overlays(run_dir):
    path = write_run_report(run_dir)
    text = open(path, encoding='utf-8').read()
    start = text.index('<p id="legend">')
    legend = text[start:text.index('</p>', start)]
    assert (f'<span class="swatch" style="border-color: rgb{PRED_COLOUR}"></span> green outline: the prediction'
            in legend)
    assert f'<span class="swatch" style="border-color: rgb{GT_COLOUR}"></span> red outline: the ground truth' in legend
    assert PRED_COLOUR == (0, 255, 0) and GT_COLOUR == (255, 0, 0)  # the words green and red must stay true
    assert start < text.index('<h2 id="test-val">')


def test_choices_are_a_short_table_read_from_the_records(run_dir):
    path = write_run_report(run_dir)
    page = parse(path)
    choices = [row[:2] for row in page.texts['choices'][1:]]
    assert choices == [
        ['lesion map', 'fused'], ['checkpoint', 'step 200 (iter_0000200.pt)'],
        ['threshold', 'fixed threshold 0.35 on the calibrated map'], ['post-processing', 'largest_component'],
        ['chosen on', 'val'], ['val DI', '0.7777'], ['CRF values', 'alpha=2, sxy=40, n_iter=5, postprocess=none'],
        ['CRF chosen on', 'val'], ['val DI, CRF', '0.7777 before the CRF, 0.8123 after']]
    assert all(row[2] for row in page.texts['choices'][1:])  # each choice says what it is
    # The full ranking (only the record has it) is folded away; no JSON dump.
    text = open(path, encoding='utf-8').read()
    assert '<details><summary>Full ranking on val: 2 candidates (checkpoint × map)</summary>' in text
    assert page.texts['selection'][1:] == [['1', '200', 'fused', '0.7500'], ['2', '100', 'cam', '0.5000']]
    assert '<pre>{' not in text and '&quot;' not in text


def test_the_crf_grid_searched_on_val_is_folded_away_best_first(run_dir):
    grid = [dict(CRF_CHOICE['crf'], alpha=a, DI=d) for a, d in ((1.0, 0.8), (2.0, 0.8123), (4.0, 0.5))]
    write_json(os.path.join(run_dir, 'crf', 'val_grid.json'), {'chosen': 1, 'grid': grid})
    path = write_run_report(run_dir)
    text = open(path, encoding='utf-8').read()
    assert '<details><summary>CRF grid on val: 3 combinations, best first</summary>' in text
    grid_rows = parse(path).texts['selection'][3 + 1:]  # past the ranking (header, 2 rows) and the grid's header
    assert [(row[0], row[-1]) for row in grid_rows] == [('2', '0.8123'), ('1', '0.8000'), ('4', '0.5000')]


def test_choices_fall_back_on_the_summaries_and_say_what_was_not_measured(run_dir):
    os.remove(os.path.join(run_dir, 'test', 'selection.json'))
    given = dict(CRF_CHOICE, chosen_on='given', val_DI_before=None, val_DI_after=None)
    write_json(os.path.join(run_dir, 'crf', 'selection.json'), {'selection': given})
    write_json(os.path.join(run_dir, 'crf', 'val_grid.json'), {'chosen': 0, 'grid': [dict(given['crf'], DI=0.5)]})
    page = parse(write_run_report(run_dir))
    choices = dict(row[:2] for row in page.texts['choices'][1:])
    assert choices['lesion map'] == 'fused' and choices['val DI'] == '0.7777'
    assert choices['val DI, CRF'] == 'not measured: no val split'
    assert 'selection' not in page.texts  # no ranking in the summaries' copies; the grid is an earlier search's


def test_a_crf_choice_for_an_earlier_test_decision_is_flagged(run_dir):
    write_json(os.path.join(run_dir, 'test', 'selection.json'), {'selection': dict(SELECTION, threshold=0.4)})
    text = open(write_run_report(run_dir), encoding='utf-8').read()
    assert ('crf.py chose its values for an earlier decision of test.py than the one above: run crf.py again.'
            in text)


def test_no_nan_and_testB_shows_what_applies_to_normal_images(run_dir):
    path = write_run_report(run_dir)
    page = parse(path)
    cells = [cell for rows in page.texts.values() for row in rows for cell in row]
    assert not [cell for cell in cells if 'nan' in cell.lower()]
    summary = {tuple(row[:3]): row for row in page.texts['summary'][1:]}
    header = page.texts['summary'][0]
    fp_rate, area = header.index('FP rate'), header.index('mean area')
    assert [summary['crf', 'testB', 'before CRF'][i] for i in (fp_rate, area)] == ['0.5000', '0.1250']
    assert [summary['crf', 'testB', 'after CRF (mean)'][i] for i in (fp_rate, area)] == ['0.5000', '0.2500']
    # Per image: the lesion area of each mask, largest first (a good normal image has 0).
    assert page.texts['test-testB'][0][-1] == 'lesion area'
    assert [row[0::2] for row in page.texts['test-testB'][1:]] == [['b1', '0.2500'], ['b2', '0.0000']]
    assert page.texts['crf-testB'][0][-3:] == ['area before', 'area after', 'change']
    assert [[row[0]] + row[-3:] for row in page.texts['crf-testB'][1:]] == [
        ['b1', '0.2500', '0.5000', '0.2500'], ['b2', '0.0000', '0.0000', '0.0000']]
    text = open(path, encoding='utf-8').read()
    assert ('testB holds normal images (no lesion, no label): a good mask is empty, so a good lesion area is 0 '
            'and no green outline shows.') in text


def test_every_column_is_explained_under_its_table(run_dir):
    path = write_run_report(run_dir)
    text = open(path, encoding='utf-8').read()
    page = parse(path)
    for section in ('summary', 'test-testA', 'test-testB', 'crf-testA', 'crf-testB'):
        start = text.index(f'<h2 id="{section}">')
        part = text[start:text.index('<h2', start + 1)]
        explained = part[part.index('<ul class="help">'):]
        titles = [t for t in page.texts[section][0] if t not in ('name', 'overlay', 'translation', 'CAM',
                                                                   'test overlay', 'CRF overlay')]
        for title in titles:
            assert f'<li><b>{title}</b>: ' in explained, (section, title)
    for term in ('thresholded JA', 'pooled', 'FP rate', 'mean area', 'AUC A vs B'):
        assert f'{term}' in text[text.index('<ul class="help">'):]


@pytest.mark.parametrize('dataset, shown', [('ISIC', True), ('isic2018', True), ('BraTS', False), ('demo', False)])
def test_isics_thresholded_ja_is_shown_for_isic_only(tmp_path, dataset, shown):
    """Issue 42 item 15: the 0.65 cut is ISIC's convention; elsewhere the column read as a score of 0."""
    run = make_fake_run(tmp_path / 'results' / dataset / 'f1' / 'demo')
    path = write_run_report(run)
    page, text = parse(path), open(path, encoding='utf-8').read()
    header = page.texts['summary'][0]
    assert ('thresholded JA' in header) == shown and ('thresholded JA' in text) == shown
    rows = {(row[0], row[1], row[2]): row for row in page.texts['summary'][1:]}
    if shown:  # after n, for each way of averaging that has it (the pooled figures have none)
        column = header.index('thresholded JA')
        assert header[column - 1] == 'n'
        assert rows['test', 'val', 'mean'][column] == '0.3000' and rows['test', 'testA', 'mean'][column] == '0.2500'
        assert rows['test', 'testA', 'pooled'][column] == ''
    assert len({len(row) for row in page.texts['summary']}) == 1  # every row as wide as the header
