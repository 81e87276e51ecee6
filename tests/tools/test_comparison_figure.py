"""tools/comparison_figure.py on a tiny dataset and fake run folders: the grid it writes (columns image, ground truth
and one per method; a band and the chosen images per dataset), the images chosen by name alone, crf.py's masks
preferred, and one line instead of a figure when a method's masks are missing."""
import os

import numpy as np
import pytest
from PIL import Image

from fake_run import write_mask
from records import run_folder as rf
from reporting.overlay import GT_COLOUR, PRED_COLOUR
from tools import comparison_figure as figure

DATASETS = {'ISIC': 'isic_1', 'other': 'other_1'}  # the second in the default folder of an unknown name
NAMES = [f'img{i}' for i in range(5)]
METHODS = ('cltnet', 'psa', 'seam', 'irn', 'cam')
TILE = 24


def fake_dataset(dataroot, dataset):
    """testA of five 8 x 8 images with labels (a lesion in the top half), named so that sorting matters."""
    split = dataroot / dataset / DATASETS[dataset] / 'testA'
    for name in reversed(NAMES):
        (split / 'images').mkdir(parents=True, exist_ok=True)
        (split / 'labels').mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(split / 'images' / f'{name}.png')
        Image.fromarray(np.repeat(np.arange(8) < 4, 8).reshape(8, 8).astype(np.uint8) * 255).save(
            split / 'labels' / f'{name}_segmentation.png')


def fake_masks(results, dataset, method, stages=('test',), names=NAMES):
    """<run>/<stage>/testA/masks/NAME.png of run ``method`` (4 x 4: the figure resizes them)."""
    run = rf.run_folder(str(results), dataset, DATASETS[dataset], method)
    for stage in stages:
        for name in names:
            write_mask(rf.image_path(rf.split_folder(run, stage, 'testA'), 'masks', name), 4)
    return run


@pytest.fixture
def runs(tmp_path):
    """(argv of the figure command, result_dir) over the fake dataset and a run of every method on both datasets."""
    for dataset in DATASETS:
        fake_dataset(tmp_path / 'data', dataset)
        for method in METHODS:
            fake_masks(tmp_path / 'results', dataset, method, stages=('test', 'crf') if method != 'cam' else ('test',))
    argv = ['--dataroot', tmp_path / 'data', '--result_dir', tmp_path / 'results', '--datasets', 'ISIC,other',
            '--images', 2, '--tile', TILE, '--out', tmp_path / 'docs' / 'comparison.png']
    return [str(arg) for arg in argv], tmp_path / 'results'


def test_the_figure_is_a_grid_of_image_truth_and_each_method_per_chosen_image(runs, tmp_path):
    argv, _ = runs
    out = figure.main(argv)
    with Image.open(out) as written:
        size, mode, pixels = written.size, written.mode, np.asarray(written)
    cell = TILE + 2 * figure.PAD
    columns, rows = 2 + len(METHODS), 2
    assert mode == 'RGB'
    assert size == (columns * cell, figure.BAND_PX + len(DATASETS) * (figure.BAND_PX + rows * cell))
    # The first image row: the plain image, the ground truth in red alone, then each method's mask in green.
    top = 2 * figure.BAND_PX
    tiles = [pixels[top:top + cell, column * cell:(column + 1) * cell] for column in range(columns)]

    def has(tile, colour):
        return bool((tile == colour).all(axis=2).any())
    assert [has(tile, GT_COLOUR) for tile in tiles] == [False] + [True] * (columns - 1)
    assert [has(tile, PRED_COLOUR) for tile in tiles] == [False, False] + [True] * len(METHODS)


def test_images_are_chosen_by_name_evenly_spaced_never_by_score(runs, tmp_path):
    argv, _ = runs
    opt = figure.parse(argv)
    chosen = [os.path.basename(image) for image, _ in figure.chosen_images(opt, 'ISIC')]
    assert chosen == ['img1.png', 'img3.png']  # the middles of the two halves of img0 .. img4
    opt.images = 9  # more than there are: each image once
    assert [os.path.basename(image) for image, _ in figure.chosen_images(opt, 'ISIC')] == [f'{n}.png' for n in NAMES]


def test_crf_masks_are_shown_where_crf_py_ran_and_the_band_says_so(runs):
    argv, results = runs
    opt = figure.parse(argv)
    assert figure.mask_folder(opt, 'ISIC', 'psa')[1] == 'crf' and figure.mask_folder(opt, 'ISIC', 'cam')[1] == 'test'
    stages = {method: figure.mask_folder(opt, 'ISIC', method)[1] for method in METHODS}
    assert figure.masks_shown(METHODS, stages) == "masks after crf.py, test.py's for CAM"
    assert figure.masks_shown(('psa',), {'psa': 'crf'}) == 'every mask after crf.py'


def test_a_missing_mask_or_run_stops_with_one_line_and_writes_nothing(runs, tmp_path):
    argv, results = runs
    run = rf.run_folder(str(results), 'other', 'other_1', 'seam')
    missing = rf.image_path(rf.split_folder(run, 'crf', 'testA'), 'masks', 'img3')
    os.remove(missing)
    with pytest.raises(SystemExit) as info:
        figure.main(argv)
    assert info.value.code == (f'error: {missing} not found: the other/seam run has no mask of that testA image; '
                               'run test.py (and crf.py) on it again')
    assert not os.path.exists(tmp_path / 'docs' / 'comparison.png')
    with pytest.raises(SystemExit) as info:
        figure.main(argv + ['--names', 'ISIC/irn=irn_lite0'])
    absent = rf.run_folder(str(results), 'ISIC', 'isic_1', 'irn_lite0')
    assert info.value.code == (f'error: no testA masks of ISIC/irn in {absent}/crf or {absent}/test: run test.py '
                               '(and crf.py) on that run, or name another with --names ISIC/irn=NAME')


def test_unknown_methods_are_refused(capsys):
    with pytest.raises(SystemExit):
        figure.parse(['--methods', 'psa,unet'])
    assert 'unknown: unet' in capsys.readouterr().err
