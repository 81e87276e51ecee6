"""A fake run folder of tiny files, as test.py and crf.py write it, for the report's tests (test_html.py,
test_browser.py)."""
import csv
import json
import os

import numpy as np
from PIL import Image

from records.record_io import file_sha256

EVIL_NAME = '<script>x'
COLUMNS = ['name', 'TP', 'FP', 'FN', 'TN', 'JA', 'DI', 'AC', 'SE', 'SP']


def write_png(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new('RGB', (4, 4), (200, 30, 30)).save(path)


def write_mask(path, lesion_pixels):
    """A 4 x 4 mask whose first ``lesion_pixels`` pixels are lesion."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray((np.arange(16).reshape(4, 4) < lesion_pixels).astype(np.uint8) * 255).save(path)


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        json.dump(value, handle)


def write_split(folder, rows, summary, image_folders=('overlays',), columns=COLUMNS):
    """metrics.csv (none when ``columns`` is None), summary.json and one tiny PNG per row in each image folder."""
    os.makedirs(folder, exist_ok=True)
    if columns:
        with open(os.path.join(folder, 'metrics.csv'), 'w', newline='') as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    write_json(os.path.join(folder, 'summary.json'), summary)
    for image_folder in image_folders:
        for row in rows:
            write_png(os.path.join(folder, image_folder, row['name'] + '.png'))


def scored(name, di):
    return {'name': name, 'TP': 1, 'FP': 0, 'FN': 1, 'TN': 14, 'JA': di / (2 - di), 'DI': di,
            'AC': 0.9, 'SE': 0.5, 'SP': 1.0}


SELECTION = {'checkpoint': '/runs/demo/checkpoints/iter_0000200.pt', 'step': 200, 'map_mode': 'fused',
             'binarize': 'fixed', 'threshold': 0.35, 'postprocess': 'largest_component', 'val_DI': 0.7777,
             'chosen_on': 'val', 'ranking': [{'step': 200, 'map_mode': 'fused', 'val_DI_sweep': 0.75},
                                             {'step': 100, 'map_mode': 'cam', 'val_DI_sweep': 0.5}]}
CRF_CHOICE = {'crf': {'alpha': 2.0, 'sxy': 40.0, 'n_iter': 5, 'postprocess': 'none'}, 'chosen_on': 'val',
              'val_DI_before': 0.7777, 'val_DI_after': 0.8123}


def make_fake_run(run):
    """<run> (a pathlib.Path) with test/val, test/testA, test/testB, crf/testA and crf/testB, as test.py and
    crf.py write them (testB: normal images, no labels; its masks have 4 and 0 of 16 pixels lesion before
    the CRF, 8 and 0 after), and both records; returns its path as a string."""
    summary_selection = dict(SELECTION, ranking=[])
    means = {'JA': 0.6111, 'DI': 0.7222, 'AC': 0.9333, 'SE': 0.6444, 'SP': 0.9555}
    write_split(run / 'test' / 'val', [scored('v1', 0.9), scored('v2', 0.5)],
                dict(means, pooled=means, thresholded_JA=0.3, n_images=2, selection=summary_selection,
                     command=['test.py', '--name', 'demo']))
    write_split(run / 'test' / 'testA', [scored('a1', 0.8), scored(EVIL_NAME, 0.2), scored('a3', 0.6)],
                dict(means, JA=0.5432, pooled=means, thresholded_JA=0.25, n_images=3, selection=summary_selection,
                     auc=0.9375, images_per_second=12.5, command='python test.py --name demo'),
                image_folders=('overlays', 'translation', 'cam'))
    write_split(run / 'test' / 'testB', [{'name': 'b1'}, {'name': 'b2'}],
                {'fp_rate': 0.5, 'mean_area': 0.125, 'n_images': 2, 'selection': summary_selection,
                 'command': 'python test.py --name demo'}, columns=None)
    crf_rows = [scored('a1', 0.85), scored(EVIL_NAME, 0.1), scored('a3', 0.7)]
    write_split(run / 'crf' / 'testA', crf_rows,
                dict(means, JA=0.6789, before=means, n_images=3, command='python crf.py --name demo',
                     selection=CRF_CHOICE))
    write_split(run / 'crf' / 'testB', [dict(scored('b1', 0.0), FP=8, TN=8), dict(scored('b2', 1.0), TP=0, FN=0)],
                {'fp_rate': 0.5, 'mean_area': 0.25, 'n_images': 2, 'before': {'fp_rate': 0.5, 'mean_area': 0.125},
                 'selection': CRF_CHOICE, 'command': 'python crf.py --name demo'}, image_folders=('overlays',))
    for stage, areas in (('test', (4, 0)), ('crf', (8, 0))):
        for name, area in zip(('b1', 'b2'), areas):
            write_mask(str(run / stage / 'testB' / 'masks' / f'{name}.png'), area)
    test_record = str(run / 'test' / 'selection.json')
    write_json(test_record, {'key': None, 'selection': SELECTION, 'command': 'test.py'})
    write_json(str(run / 'crf' / 'selection.json'), {'selection': CRF_CHOICE, 'command': 'crf.py',
                                                     'test_record_sha256': file_sha256(test_record)})
    return str(run)
