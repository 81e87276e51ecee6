"""The weights README rows pipeline.py writes name the set each figure is over."""
import json

from evaluation.metrics import SCORE_NAMES
from reporting.pipeline_report import score_rows


def test_val_rows_are_named_after_the_selection_set(tmp_path):
    for stage, base in (('test', 0.5), ('crf', 0.6)):
        for split, shift in (('val', 0.0), ('testA', 0.1)):
            (tmp_path / stage / split).mkdir(parents=True)
            scores = {name: base + shift for name in SCORE_NAMES}
            (tmp_path / stage / split / 'summary.json').write_text(json.dumps(scores))
        (tmp_path / stage / 'testB').mkdir()
        (tmp_path / stage / 'testB' / 'summary.json').write_text(json.dumps({'fp_rate': base - 0.4}))
    label = 'val + few_sample/stage2_50 + 50 normal images held out of B_weak'
    rows, normal = score_rows(str(tmp_path), label)
    assert rows == [f'| {label} | before CRF | ' + ' | '.join(['0.5000'] * 5) + ' |',
                    f'| {label} | after CRF | ' + ' | '.join(['0.6000'] * 5) + ' |',
                    '| testA | before CRF | ' + ' | '.join(['0.6000'] * 5) + ' |',
                    '| testA | after CRF | ' + ' | '.join(['0.7000'] * 5) + ' |']
    assert normal == 'testB, share of normal images given any lesion pixel: before CRF: 0.10, after CRF: 0.20.'
    assert score_rows(str(tmp_path))[0][0].startswith('| val | before CRF |')
