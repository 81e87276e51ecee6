"""What each column and term of the run report means, one line each, shown under the table using it."""
from reporting.report_cells import esc

MEANING = {
    'stage': "test: the masks of test.py (the rule chosen on val); crf: the same maps after crf.py's dense CRF",
    'split': 'val: the labelled images every choice is made on; testA: lesion images with labels, scored once; '
             'testB: normal images, no labels',
    'values': 'mean: averaged over images; pooled: one score from the pixel counts of all images summed '
              '(large lesions weigh more); before / after CRF: test.py\'s masks, then crf.py\'s',
    'JA': 'Jaccard index, |mask ∩ label| / |mask ∪ label|; 1 is perfect',
    'DI': "Dice, 2 |mask ∩ label| / (|mask| + |label|), the paper's score; 1 is perfect",
    'AC': 'accuracy: share of all pixels marked right',
    'SE': "sensitivity: share of the lesion's pixels the mask covers",
    'SP': 'specificity: share of the normal pixels the mask leaves out',
    'n': 'images in the split',
    'thresholded JA': "ISIC's score: each image's JA, counted as 0 below 0.65, averaged over images",
    'AUC A vs B': "how well the model's image-level lesion score tells testA's lesion images from testB's "
                  'normal ones: 1 perfect, 0.5 chance',
    'FP rate': 'normal (testB) images: share of them with any pixel marked lesion; good: 0',
    'mean area': 'normal (testB) images: mean share of their pixels marked lesion; good: 0',
    'images/s': 'images this stage processed per second on the machine that ran it',
    'lesion area': "share of the image's pixels the mask marks lesion; on a normal image good is 0",
    'DI before': "the image's DI with test.py's mask",
    'DI after': "the image's DI after the CRF",
    'area before': "share of pixels test.py's mask marks lesion",
    'area after': 'share of pixels marked lesion after the CRF',
    'change': 'after minus before',
    'val DI (sweep)': "the map's best mean val DI over a sweep of fixed thresholds, before post-processing: "
                      'what ranks the candidates (the best few are then tried with Otsu and post-processing)',
    'val DI': 'mean val DI of the rule applied to this map',
}
EMPTY_CELLS = ('An empty cell does not apply to its row: testB has normal images without labels, so it has FP '
               'rate and mean area instead of JA … SP; AUC, FP rate, mean area and images/s are given once '
               'per split.')


def explain(titles, note=''):
    """A list of one line per title that MEANING knows, in the order given, then ``note``."""
    lines = [f'<li><b>{esc(title)}</b>: {esc(MEANING[title])}</li>' for title in titles if title in MEANING]
    if note:
        lines.append(f'<li>{esc(note)}</li>')
    return '<ul class="help">' + ''.join(lines) + '</ul>' if lines else ''
