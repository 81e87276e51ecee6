"""Tests for util/html.py: the run report rebuilt from a fake run folder of tiny files."""
import csv
import json
import os
import urllib.parse
from html.parser import HTMLParser

import pytest
from PIL import Image

from util.html import write_run_report

EVIL_NAME = '<script>x'
COLUMNS = ['name', 'TP', 'FP', 'FN', 'TN', 'JA', 'DI', 'AC', 'SE', 'SP']


class PageParser(HTMLParser):
    """Collects every start tag with its attributes, and the rows of each table under the h2 id before it."""

    def __init__(self):
        super().__init__()
        self.tags, self.tables = [], {}
        self._section, self._row = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == 'h2':
            self._section = attrs.get('id')
        elif tag == 'tr':
            self._row = []
            self.tables.setdefault(self._section, []).append(self._row)
        elif tag == 'td' and self._row is not None:
            self._row.append(attrs.get('data-v'))


def parse(path):
    parser = PageParser()
    with open(path, encoding='utf-8') as handle:
        parser.feed(handle.read())
    parser.close()
    return parser


def write_png(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new('RGB', (4, 4), (200, 30, 30)).save(path)


def write_split(folder, rows, summary, image_folders=('overlays',), columns=COLUMNS):
    """metrics.csv, summary.json and one tiny PNG per row in each image folder."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.csv'), 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(folder, 'summary.json'), 'w') as handle:
        json.dump(summary, handle)
    for image_folder in image_folders:
        for row in rows:
            write_png(os.path.join(folder, image_folder, row['name'] + '.png'))


def scored(name, di):
    return {'name': name, 'TP': 1, 'FP': 0, 'FN': 1, 'TN': 14, 'JA': di / (2 - di), 'DI': di,
            'AC': 0.9, 'SE': 0.5, 'SP': 1.0}


@pytest.fixture
def run_dir(tmp_path):
    """results/ISIC/isic_1/demo with test/val, test/testA, test/testB and crf/testA."""
    run = tmp_path / 'results' / 'ISIC' / 'isic_1' / 'demo'
    selection = {'checkpoint': 'step_000200.pt', 'step': 200, 'map_mode': 'fused', 'threshold': 0.35,
                 'postprocess': 'largest_component', 'val_DI': 0.7777}
    means = {'JA': 0.6111, 'DI': 0.7222, 'AC': 0.9333, 'SE': 0.6444, 'SP': 0.9555}
    write_split(run / 'test' / 'val', [scored('v1', 0.9), scored('v2', 0.5)],
                dict(means, pooled=means, thresholded_JA=0.3, n_images=2, selection=selection,
                     command=['test.py', '--name', 'demo']))
    write_split(run / 'test' / 'testA', [scored('a1', 0.8), scored(EVIL_NAME, 0.2), scored('a3', 0.6)],
                dict(means, JA=0.5432, pooled=means, thresholded_JA=0.25, n_images=3, selection=selection,
                     auc=0.9375, images_per_second=12.5, command='python test.py --name demo'),
                image_folders=('overlays', 'translation', 'cam'))
    write_split(run / 'test' / 'testB', [{'name': 'b1', 'area': 10}, {'name': 'b2', 'area': 0}],
                {'fp_rate': 0.25, 'mean_area': 42.5, 'n_images': 2, 'selection': selection},
                columns=['name', 'area'])
    crf_rows = [scored('a1', 0.85), scored(EVIL_NAME, 0.1), scored('a3', 0.7)]
    write_split(run / 'crf' / 'testA', crf_rows,
                dict(means, JA=0.6789, before=means, n_images=3, command='python crf.py --name demo',
                     selection=dict(selection, crf={'sxy': 3, 'compat': 10, 'iterations': 5})))
    return str(run)


def test_report_is_self_contained_and_shows_the_summary(run_dir):
    path = write_run_report(run_dir)
    assert path == os.path.join(run_dir, 'index.html')
    text = open(path, encoding='utf-8').read()
    page = parse(path)
    images = [attrs for tag, attrs in page.tags if tag == 'img']
    # val and testB: 2 overlays each; testA: 3 x (overlay, translation, CAM); CRF: 3 x (test, crf).
    assert len(images) == 2 + 2 + 9 + 6
    for attrs in images:
        url = urllib.parse.urlsplit(attrs['src'])
        assert not url.scheme and not url.netloc and not url.path.startswith('/')
        assert os.path.isfile(os.path.join(run_dir, urllib.parse.unquote(url.path)))
        assert attrs['loading'] == 'lazy'
    assert 'http://' not in text and 'https://' not in text
    assert not any(tag in ('link', 'iframe') or attrs.get('src') for tag, attrs in page.tags if tag != 'img')
    assert 'demo' in text and 'ISIC' in text
    for number in ('0.6111', '0.5432', '0.6789', '0.9375', '0.2500', '42.5', '12.5', 'step_000200.pt',
                   '&quot;sxy&quot;: 3', 'python crf.py --name demo', 'test.py --name demo'):
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
