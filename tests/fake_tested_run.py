"""A dataset of phantom scenes and test.py's outputs on it (calibrated blurred maps and its record), without
training: what crf.py, pseudo.py and the record checks start from."""
import json

import numpy as np
from PIL import Image
from scipy import ndimage

from evaluation.metrics import SegmentationScores
from evaluation.postprocess import calibrate, foreground_mask

SIZE = 32
BORDER = 3


def scene(rng, lesion=True):
    """(uint8 image with a black frame and a bright rectangle, bool label, calibrated blurred prob)."""
    gt = np.zeros((SIZE, SIZE), bool)
    if lesion:
        top, left = rng.integers(BORDER + 2, SIZE // 2 - 2, size=2)
        height, width = rng.integers(8, 12, size=2)
        gt[top:top + height, left:left + width] = True
    raw = np.where(gt[..., None], 190.0, 70.0) + rng.normal(0, 6, (SIZE, SIZE, 3))
    raw[:BORDER] = raw[-BORDER:] = raw[:, :BORDER] = raw[:, -BORDER:] = 0
    raw = raw.clip(0, 255).astype(np.uint8)
    # Blurred and miscalibrated (0.5 sits where the blur is 0.3): thresholding gives a fat square.
    prob = calibrate(ndimage.gaussian_filter(gt.astype(float), 2.5), 0.3) * foreground_mask(raw)
    return raw, gt, prob


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# test.py's decision as its record holds it (the maps above are calibrated to it).
TEST_RULE = {'map_mode': 'attention', 'binarize': 'fixed', 'threshold': 0.3, 'postprocess': 'none', 'checkpoint': None}


def make_tested_run(tmp_path, splits=('val', 'testA', 'testB'), n_images=3, seed=0, false_alarms=0):
    """Dataset <tmp>/data/ds/f1 and test.py's outputs in <tmp>/results/ds/f1/run/test/<split>/; the first
    ``false_alarms`` testB images hold a lesion-like patch that test.py marked."""
    rng = np.random.default_rng(seed)
    data, test_root = tmp_path / 'data' / 'ds' / 'f1', tmp_path / 'results' / 'ds' / 'f1' / 'run' / 'test'
    for split in ('val', 'testA', 'testB'):
        scores = SegmentationScores()
        for index in range(n_images):
            name = f'{split}_{index}'
            raw, gt, prob = scene(rng, lesion=split != 'testB' or index < false_alarms)
            if split == 'testB':
                png(data / split / f'{name}.png', raw)
            else:
                png(data / split / 'images' / f'{name}.png', raw)
                png(data / split / 'labels' / f'{name}_segmentation.png', gt.astype(np.uint8) * 255)
            if split in splits:
                png(test_root / split / 'prob' / f'{name}.png', np.round(prob * 65535).astype(np.uint16))
                png(test_root / split / 'masks' / f'{name}.png', (prob >= 0.5).astype(np.uint8) * 255)
                scores.add(name, prob >= 0.5, gt)
        if split in splits and split != 'testB':
            (test_root / split / 'summary.json').write_text(json.dumps(
                {**scores.summary(), 'selection': TEST_RULE, 'command': 'test.py'}))
    (test_root / 'selection.json').write_text(json.dumps({'selection': TEST_RULE, 'command': 'test.py'}))
    return tmp_path, test_root


def crf_argv(root, *extra):
    return ['--dataroot', str(root / 'data'), '--dataset', 'ds', '--folder', 'f1', '--name', 'run',
            '--result_dir', str(root / 'results'), '--device', 'cpu', '--num_workers', '1', *extra]
