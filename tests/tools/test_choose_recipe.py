"""Tests for tools/choose_recipe.py: the recipe to release chosen from finished pipelines' val records."""
import json

import numpy as np
import pytest
from PIL import Image

from tools.choose_recipe import main, parse_args
from evaluation.metrics import CSV_COLUMNS, write_metrics_csv
from conftest import help_text

LESIONS = ['les_a', 'les_b']
NORMALS = ['norm_0', 'norm_1', 'norm_2', 'norm_3']  # B_weak, sorted: the last two are held out


@pytest.fixture
def dataroot(tmp_path):
    folder = tmp_path / 'data' / 'Toy' / 'toy_1'
    for side, names in (('2_A_weak', LESIONS), ('4_B_weak', NORMALS)):
        (folder / side).mkdir(parents=True)
        for name in names:
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / side / f'{name}.png')
    return tmp_path / 'data'


def _pipeline(results, name, lesion_dice, normal_pixels=(), held=0, recipe=None, overrides=None, group=''):
    """A finished pipeline's records: per-image val rows after the CRF (lesion DI as given; each held-out
    normal image predicted with the given lesion pixel count, held out by patient with ``group``) and, when
    given, the recipe it ran and what its command set instead."""
    folder = results / 'Toy' / 'toy_1'
    (folder / name).mkdir(parents=True)
    (folder / name / 'pipeline.json').write_text(json.dumps({'steps': {}}))
    if recipe is not None:
        snapshot = {'recipe': recipe} | ({'overrides': overrides} if overrides else {})
        (folder / name / 'steps.json').write_text(json.dumps(snapshot))
    release = folder / f'{name}_release'
    (release / 'test').mkdir(parents=True)
    held_out = {'hold_out_normals': held} | ({'hold_out_group': group} if group else {})
    (release / 'test' / 'selection.json').write_text(json.dumps({'selection': held_out}))
    (release / 'crf' / 'val').mkdir(parents=True)
    (release / 'crf' / 'selection.json').write_text(json.dumps({'selection': {}}))
    rows = [dict.fromkeys(CSV_COLUMNS, 0) | {'name': les, 'DI': dice, 'TP': 1}
            for les, dice in zip(LESIONS, lesion_dice)]
    rows += [dict.fromkeys(CSV_COLUMNS, 0) | {'name': norm, 'DI': float(not pixels), 'FP': pixels}
             for norm, pixels in zip(NORMALS[-held:] if held else [], normal_pixels)]
    write_metrics_csv(str(release / 'crf' / 'val' / 'metrics.csv'), rows)


def _choose(dataroot, results, released, candidates, *extra):
    return main(['--dataroot', str(dataroot), '--dataset', 'Toy', '--folder', 'toy_1', '--result_dir', str(results),
                 '--released', released, '--candidates', candidates, *extra])


def test_a_candidate_is_released_only_when_it_gains_the_margin_without_more_false_lesions(dataroot, tmp_path, capsys):
    results = tmp_path / 'runs'
    _pipeline(results, 'old', [0.80, 0.80], normal_pixels=(0, 5), held=2,
              recipe='[pipeline]\nrounds = 1\nhold_out_normals = 2\n[stage2]\nch = 24\n')
    _pipeline(results, 'small_gain', [0.80, 0.808], normal_pixels=(0, 5), held=2)      # +0.004 < 0.005
    _pipeline(results, 'gain_more_fp', [0.85, 0.85], normal_pixels=(3, 5), held=2)     # 1.00 > 0.50
    _pipeline(results, 'gain', [0.82, 0.82], normal_pixels=(0, 0), held=2)
    _pipeline(results, 'rebuilt', [0.79, 0.79], normal_pixels=(0, 5), held=2,
              recipe='[pipeline]\nrounds = 1\nhold_out_normals = 2\n[stage2]\nch = 24\n',
              overrides={'pipeline.from_stage1': '', 'pipeline.seed': 0})
    _pipeline(results, 'bigger_gain', [0.83, 0.83], normal_pixels=(0, 9), held=2,
              recipe='[pipeline]\nrounds = 2\nhold_out_normals = 2\n[stage2]\nimg_size = 256\n')
    out = tmp_path / 'choice.json'
    assert _choose(dataroot, results, 'old', 'small_gain,gain_more_fp,gain,bigger_gain', '--out', str(out)) == \
        'bigger_gain'
    record = json.loads(out.read_text())
    assert record['chosen'] == 'bigger_gain' and record['released']['lesion_DI'] == pytest.approx(0.80)
    assert record['released']['normals'] == 2 and record['released']['normals_with_lesion'] == 0.5
    assert 'needed' in record['reasons']['small_gain'] and '1.00 > 0.50' in record['reasons']['gain_more_fp']
    assert record['command'].startswith('python -m tools.choose_recipe --dataroot')
    printed = capsys.readouterr().out
    changes = 'pipeline.rounds = 2, stage2.ch = "unset", stage2.img_size = 256'
    assert f'| bigger_gain | {changes} | 2 | 0.8300 | 2 | 0.50 |' in printed and 'release: bigger_gain' in printed
    assert '| gain | recipe not recorded | 2 | 0.8200 |' in printed
    assert _choose(dataroot, results, 'old', 'rebuilt') == 'old'
    assert '| rebuilt | pipeline.from_stage1 = "", pipeline.seed = 0 | 2 | 0.7900 |' in capsys.readouterr().out
    assert _choose(dataroot, results, 'old', 'small_gain,gain_more_fp') == 'old'
    assert _choose(dataroot, results, 'old', 'small_gain', '--margin', '0.003') == 'small_gain'


def test_the_table_goes_into_its_section_of_a_document_and_replaces_it_there(dataroot, tmp_path):
    results = tmp_path / 'runs'
    _pipeline(results, 'old', [0.80, 0.80])
    _pipeline(results, 'new', [0.90, 0.90])
    doc = tmp_path / 'RESULTS.md'
    with pytest.raises(SystemExit, match='RESULTS.md not found; --doc adds a section'):
        _choose(dataroot, results, 'old', 'new', '--doc', str(doc))
    doc.write_text('# Results\n\nkept\n')
    _choose(dataroot, results, 'old', 'new', '--doc', str(doc))
    _choose(dataroot, results, 'new', 'old', '--doc', str(doc))
    text = doc.read_text()
    assert text.startswith('# Results\n\nkept\n') and text.count('### Recipe candidates, Toy') == 1
    unmeasured = 'normals with a lesion not measured (the recipe holds no normal images out: hold_out_normals)'
    assert f'| old | recipe not recorded | 2 | 0.8000 | 0 | - | {unmeasured} |' in text
    assert '| new | released recipe | 2 | 0.9000 | 0 | - | released -> release |' in text
    assert 'Written by `python -m tools.choose_recipe --dataroot' in text and '--released new' in text
    _choose(dataroot, results, 'old', 'new', '--doc', str(doc), '--section', 'Toy, later')
    later = doc.read_text()
    assert later.startswith(text.rstrip('\n')) and later.count('### Recipe candidates, Toy') == 2  # kept beside
    assert '<!-- recipes Toy, later start -->\n### Recipe candidates, Toy, later\n' in later
    assert "--section 'Toy, later'`" in later  # the command as it runs, quotes and all
    # Neither holds normals out: the candidate cannot show its false lesions, so more Dice alone does not win.
    assert later.index(f'| new | recipe not recorded | 2 | 0.9000 | 0 | - | {unmeasured} |') > \
        later.index('<!-- recipes Toy, later start -->')


def test_fewer_false_lesions_on_normals_may_cost_up_to_the_tolerance(dataroot, tmp_path):
    results = tmp_path / 'runs'
    _pipeline(results, 'old', [0.80, 0.80], normal_pixels=(4, 5), held=2)
    _pipeline(results, 'gated', [0.795, 0.795], normal_pixels=(0, 0), held=2)
    _pipeline(results, 'gated_worse', [0.78, 0.78], normal_pixels=(0, 0), held=2)
    _pipeline(results, 'no_normals', [0.792, 0.792])
    assert _choose(dataroot, results, 'old', 'gated_worse,no_normals,gated') == 'gated'
    assert _choose(dataroot, results, 'old', 'gated_worse,no_normals') == 'old'
    assert _choose(dataroot, results, 'old', 'gated', '--tolerance', '0') == 'old'
    # A released pipeline that held out no normals cannot show its false lesions either: a candidate that shows
    # at most --normals_target of them a lesion may cost the tolerance; one that shows more never wins.
    assert _choose(dataroot, results, 'no_normals', 'gated') == 'gated'
    assert _choose(dataroot, results, 'no_normals', 'gated_worse') == 'no_normals'  # 0.78 < 0.782
    out = tmp_path / 'choice.json'
    assert _choose(dataroot, results, 'no_normals', 'old', '--out', str(out)) == 'no_normals'  # 0.80 >= 0.797
    reason = json.loads(out.read_text())['reasons']['old']
    assert reason == "normals with a lesion 1.00 > 0.10 (the target; the released recipe's not measured)"


def test_normals_of_training_patients_count_as_not_measured_against_whole_held_out_patients(dataroot, tmp_path,
                                                                                           capsys):
    results = tmp_path / 'runs'
    patient = '^(norm_[0-9])'  # one image a patient here: the same two images held out either way
    _pipeline(results, 'by_image', [0.80, 0.80], normal_pixels=(0, 0), held=2)
    _pipeline(results, 'by_patient', [0.795, 0.795], normal_pixels=(0, 0), held=2, group=patient)
    _pipeline(results, 'by_patient_fp', [0.83, 0.83], normal_pixels=(0, 4), held=2, group=patient)
    out = tmp_path / 'choice.json'
    assert _choose(dataroot, results, 'by_image', 'by_patient_fp,by_patient', '--out', str(out)) == 'by_patient'
    record = json.loads(out.read_text())
    assert record['released']['normals_by'] == '' and record['candidates'][1]['normals_by'] == patient
    assert record['reasons']['by_patient_fp'] == \
        "normals with a lesion 0.50 > 0.10 (the target; the released recipe's normals are images of training " \
        'patients)'
    assert '| by_patient | same recipe' not in capsys.readouterr().out
    # The other way round, the candidate's normals (0.00, images of training patients) do not count.
    assert _choose(dataroot, results, 'by_patient', 'by_image', '--out', str(out)) == 'by_patient'
    assert json.loads(out.read_text())['reasons']['by_image'] == (
        'normals with a lesion not measured on held-out patients (the recipe holds single images out: '
        'hold_out_group)')
    assert '| by_patient | released recipe | 2 | 0.7950 | 2 of whole patients | 0.00 | released -> release |' in \
        capsys.readouterr().out


def test_pipelines_chosen_on_other_images_or_unfinished_are_refused_in_one_line(dataroot, tmp_path):
    results = tmp_path / 'runs'
    _pipeline(results, 'old', [0.80, 0.80])
    _pipeline(results, 'other', [0.90])
    with pytest.raises(SystemExit, match='different lesion images .1 vs 2.'):
        _choose(dataroot, results, 'old', 'other')
    with pytest.raises(SystemExit, match=r'missing/pipeline.json not found: finish the pipeline first .*name missing'):
        _choose(dataroot, results, 'old', 'missing')
    _pipeline(results, 'held', [0.80, 0.80], normal_pixels=(0, 0), held=2)
    with pytest.raises(SystemExit, match='nowhere/Toy/toy_1 not found'):
        _choose(tmp_path / 'nowhere', results, 'held', 'old')
    (tmp_path / 'bare' / 'Toy' / 'toy_1').mkdir(parents=True)
    with pytest.raises(SystemExit, match='exactly one subfolder <N>_B_weak'):
        _choose(tmp_path / 'bare', results, 'held', 'old')


@pytest.mark.parametrize('text, message', [
    ('{"recipe": "[pipeline]\\nroun', 'is not readable JSON (JSONDecodeError: '),
    ('[1, 2]', 'holds a JSON list, not the object its script writes: delete it and run pipeline.py again'),
    ('{"recipe": 3}', 'holds no recipe of [sections] (3); run the pipeline new again'),
    ('{"recipe": "[pipeline\\n"}', 'holds no recipe of [sections] ("[pipeline\\n"); run the pipeline new again'),
    ('{"recipe": "rounds = 2\\n"}', 'holds no recipe of [sections] ("rounds = 2\\n"); run the pipeline new again '
                                    'with its command (python pipeline.py ... --name new): its finished steps are '
                                    'skipped and steps.json is written anew'),
])
def test_a_damaged_steps_json_is_refused_in_one_line_with_the_fix(dataroot, tmp_path, text, message):
    results = tmp_path / 'runs'
    _pipeline(results, 'old', [0.80, 0.80])
    _pipeline(results, 'new', [0.90, 0.90])
    snapshot = results / 'Toy' / 'toy_1' / 'new' / 'steps.json'
    snapshot.write_text(text)
    with pytest.raises(SystemExit) as info:
        _choose(dataroot, results, 'old', 'new')
    assert str(info.value.code).startswith(f'error: {snapshot} {message}') and '\n' not in str(info.value.code)


def test_help_explains_every_flag(capsys):
    text = help_text(capsys, parse_args)
    for flag in ('--dataroot', '--dataset', '--folder', '--result_dir', '--released', '--candidates', '--margin',
                 '--tolerance', '--out', '--doc'):
        assert flag in text
    with pytest.raises(SystemExit):
        parse_args(['--dataset', 'Toy', '--folder', 'toy_1', '--released', 'a', '--candidates', 'b',
                    '--margin', '-1'])
