"""tools/benchmark.py's comparison methods (pcm, seam, psa, irn) on fake run folders, no script run: their rows
and "+CRF" rows in RESULTS.md's paper-layout table and results.json, read from the runs; psa and irn trained on
the cam run's val-chosen checkpoint; --method_train_args; the paper's figures kept out of every measured cell."""
import json
import os

import pytest
import torch

from conftest import TINY_DATASET, TINY_FOLDER, usage_error
from evaluation.metrics import SCORE_NAMES
from fake_run import write_json
from models.base_model import CHECKPOINT_FORMAT
from records import run_folder as rf
from tools import benchmark

NEW = ('cam', 'pcm', 'seam', 'psa', 'irn')
LITE0 = 'efficientnet-lite0'


def fake_trained_run(results, method, name, index, encoder=LITE0, steps=(2,), chosen=2, select_few=''):
    """A finished run of ``method`` named ``name`` as train.py, test.py and crf.py leave it, in small files: its
    checkpoints (train_seconds 60 * (index + 1)), records and summaries, every score distinct (from ``index``);
    returns {'test': testA summary, 'crf': testA summary, 'fp': {stage: testB fp_rate}}."""
    run = rf.run_folder(str(results), TINY_DATASET, TINY_FOLDER, name)
    architecture = {'model': method, 'img_size': 32, 'img_ch': 3, 'ch': 4, **({'encoder': encoder} if encoder else {})}
    for step in steps:
        os.makedirs(rf.checkpoints_folder(run), exist_ok=True)
        torch.save({'format': CHECKPOINT_FORMAT, 'architecture': architecture, 'nets': {}, 'step': step,
                    'train_seconds': 60.0 * (index + 1), 'options': {'img_size': 32, 'ch': 4, 'batch_size': 2,
                                                                     'iteration': steps[-1], 'model': method}},
                   rf.checkpoint_path(run, step))
    write_json(rf.test_record_path(run), {'selection': {
        'step': chosen, 'checkpoint': rf.checkpoint_path(run, chosen), 'map_mode': method, 'binarize': 'fixed',
        'threshold': 0.5, 'postprocess': 'none', 'select_few': select_few,
        'chosen_on': f'val + few_sample/{select_few}' if select_few else 'val'}})
    write_json(rf.crf_record_path(run), {'selection': {'crf': {'alpha': 1.0}, 'chosen_on': 'val'}})
    made = {'fp': {}}
    for offset, stage in enumerate(('test', 'crf')):
        base = 0.1 * index + 0.01 * offset
        made[stage] = {key: round(base + 0.001 * (k + 1), 6) for k, key in enumerate(SCORE_NAMES)}
        made['fp'][stage] = round(0.5 - base, 6)
        write_json(rf.summary_path(rf.split_folder(run, stage, 'testA')),
                   {**made[stage], 'images_per_second': 10.0 + index,
                    **({'auc': 0.9 - 0.01 * index} if stage == 'test' else {})})
        write_json(rf.summary_path(rf.split_folder(run, stage, 'testB')), {'fp_rate': made['fp'][stage]})
    return made


def comparison_rows(docs, dataset=TINY_DATASET):
    """RESULTS.md's paper-layout table of ``dataset`` -> ({row name: cells after it}, the backbone note)."""
    with open(os.path.join(docs, 'RESULTS.md'), encoding='utf-8') as handle:
        text = handle.read()
    section = text.split(f'### {dataset} (testA)\n', 1)[1].split('\n#', 1)[0]
    lines = [line for line in section.splitlines() if line.startswith('| ') and not line.startswith('| method')]
    note = next(line for line in section.splitlines() if line.startswith('Backbone'))
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip('|').split('|')] for line in lines)}, note


@pytest.fixture
def no_scripts(monkeypatch):
    """benchmark with every script replaced by a record of its command: [(label, argv)]."""
    calls = []
    monkeypatch.setattr(benchmark, 'test_and_refine', lambda run, opt: calls.append((run.label(), 'test+crf')))
    monkeypatch.setattr(benchmark, '_timed_train', lambda run, argv, deadline=None: calls.append(
        (run.label(), argv)) or (1.0, False))
    return calls


def test_new_methods_and_their_crf_rows_come_from_their_run_folders(tmp_path, no_scripts):
    results = tmp_path / 'results'
    made = {method: fake_trained_run(results, method, f'{method}_lite0', index, encoder=None if method == 'pcm'
                                     else LITE0) for index, method in enumerate(NEW)}
    names = ','.join(f'{method}={method}_lite0' for method in NEW)
    out = benchmark.main(['--reuse', '--datasets', TINY_DATASET, '--methods', ','.join(NEW), '--names', names,
                          '--result_dir', results, '--out_dir', tmp_path / 'docs'])
    assert no_scripts == [(f'{TINY_DATASET}/{method}', 'test+crf') for method in NEW]  # reused: nothing trained
    expected_rows = [row for method in NEW for row in (method, method + '+crf')]
    assert list(out[TINY_DATASET]) == expected_rows
    table, note = comparison_rows(tmp_path / 'docs')
    assert list(table) == [name for method in NEW for name in (benchmark.NAMES[method], benchmark.NAMES[method]
                                                                 + '+CRF')]
    for index, method in enumerate(NEW):
        for stage, row in (('test', method), ('crf', method + '+crf')):
            assert out[TINY_DATASET][row] == made[method][stage]
            cells = table[benchmark._row_name(row)]
            assert cells[:5] == [f'{made[method][stage][k]:.3f}' for k in SCORE_NAMES]
            assert cells[5] == f"{made[method]['fp'][stage]:.3f}"
            assert cells[6] == (f'{0.9 - 0.01 * index:.3f}' if stage == 'test' else '—')
            assert cells[7] == f'{index + 1:.1f}'  # minutes, from train_seconds
            assert cells[8] == ('scratch' if method == 'pcm' else LITE0)  # read from the checkpoint
    # The backbone note says what each run used, read, not assumed: pcm's checkpoint has no pretrained encoder.
    assert note.startswith('Backbone, read from each run\'s checkpoint: CAM, SEAM, PSA, IRN: on the same '
                           'ImageNet-pretrained EfficientNet-Lite0 (`--encoder efficientnet-lite0`')
    assert 'PCM: on an encoder trained from scratch (`--encoder scratch`)' in note
    assert 'ResNet-38/50' in note and 'cannot be installed here' in note
    # The paper gives CAM's JA on this dataset name only when it is ISIC or BraTS: a dash here.
    assert table['CAM'][-1] == '—'


def test_psa_and_irn_train_on_the_cam_runs_val_chosen_checkpoint(tmp_path, no_scripts):
    results = tmp_path / 'results'
    fake_trained_run(results, 'cam', 'cam_lite0', 0, steps=(1, 2, 3), chosen=2)
    opt = benchmark.parse(['--result_dir', str(results), '--names', 'cam=cam_lite0',
                           '--method_train_args', 'irn=--irn_beta 4'])
    chosen = rf.checkpoint_path(rf.run_folder(str(results), TINY_DATASET, TINY_FOLDER, 'cam_lite0'), 2)
    for method, flag in benchmark.CAM_BASED.items():
        benchmark.train_run(benchmark.Run(opt, TINY_DATASET, method), opt)
        label, argv = no_scripts[-1]
        assert label == f'{TINY_DATASET}/{method}'
        assert argv[argv.index(flag) + 1] == chosen and argv.count(flag) == 1
    assert no_scripts[-1][1][-4:] == ['--irn_beta', '4', '--irn_cam_weights', chosen]
    # A CAM file named by hand wins over the chosen one.
    opt = benchmark.parse(['--result_dir', str(results), '--method_train_args', 'psa=--psa_cam_weights mine.pt'])
    benchmark.train_run(benchmark.Run(opt, TINY_DATASET, 'psa'), opt)
    argv = no_scripts[-1][1]
    assert argv.count('--psa_cam_weights') == 1 and argv[argv.index('--psa_cam_weights') + 1] == 'mine.pt'


def test_psa_without_a_tested_cam_run_stops_with_one_line(tmp_path, no_scripts, capsys):
    results = tmp_path / 'results'
    opt = benchmark.parse(['--result_dir', str(results), '--names', f'{TINY_DATASET}/cam=cam_lite0'])
    run = benchmark.Run(opt, TINY_DATASET, 'psa')
    cam = rf.run_folder(str(results), TINY_DATASET, TINY_FOLDER, 'cam_lite0')
    record = rf.test_record_path(cam)
    fix = (f'train and test the cam run first (list cam before psa in --methods), or name a tested cam run with '
           f'--names {TINY_DATASET}/cam=NAME')
    with pytest.raises(SystemExit) as info:
        benchmark.train_run(run, opt)
    assert info.value.code == f'error: {TINY_DATASET}/psa trains on the CAM test.py chose in {cam}, but {record} ' \
                              f'is not there: {fix}'
    fake_trained_run(results, 'cam', 'cam_lite0', 0, steps=(1, 3), chosen=2)  # step 2's file is gone
    with pytest.raises(SystemExit) as info:
        benchmark.train_run(run, opt)
    assert info.value.code == f'error: {record} chose the checkpoint {rf.checkpoint_path(cam, 2)}, which is not ' \
                              f'there: run test.py on {cam} again'
    assert no_scripts == []
    message = usage_error(capsys, benchmark.parse, ['--methods', 'irn,cam'])
    assert 'error: --methods: irn trains on the CAM test.py chose in the cam run; list cam before it' in message


def test_method_train_args_go_to_train_py_only_most_specific_last(tmp_path, capsys):
    opt = benchmark.parse(['--result_dir', str(tmp_path), '--train_args', '--save_freq 5', '--method_train_args',
                           'seam=--batch_size 4 ; ISIC/seam=--batch_size 2;psa=--psa_cam_weights "a b.pt"'])
    isic, brats = (benchmark.Run(opt, dataset, 'seam') for dataset in ('ISIC', 'BraTS'))
    assert isic.train_argv[-6:] == ['--save_freq', '5', '--batch_size', '4', '--batch_size', '2']
    assert brats.train_argv[-4:] == ['--save_freq', '5', '--batch_size', '4']
    assert '--batch_size' not in isic.argv  # test.py and crf.py do not get them
    assert benchmark.Run(opt, 'ISIC', 'psa').train_argv[-2:] == ['--psa_cam_weights', 'a b.pt']
    assert benchmark.Run(opt, 'ISIC', 'cam').train_argv[-2:] == ['--save_freq', '5']
    methods = ', '.join(benchmark.METHODS)
    for bad, error in (('seam', f"expected [DATASET/]METHOD=VALUE pairs with METHOD in {methods}, got 'seam'"),
                       ('unet=--x 1', f"expected [DATASET/]METHOD=VALUE pairs with METHOD in {methods}, got "
                                      f"'unet=--x 1'"),
                       ('psa=--x "1', "psa='--x \"1': No closing quotation")):
        assert f'error: --method_train_args: {error}' in usage_error(
            capsys, benchmark.parse, ['--method_train_args', bad])


def test_select_few_goes_to_that_datasets_test_py_only(tmp_path, capsys):
    opt = benchmark.parse(['--result_dir', str(tmp_path), '--select_few', 'BraTS=stage2_50'])
    brats, isic = benchmark.Run(opt, 'BraTS', 'cam'), benchmark.Run(opt, 'ISIC', 'cam')
    steps = benchmark.RunSteps(brats, brats)
    assert steps.step('test', 'test.py', []).argv[-2:] == ['--select_few', 'stage2_50']
    assert '--select_few' not in steps.step('crf', 'crf.py', []).argv
    assert '--select_few' not in brats.train_argv and '--select_few' not in isic.test_argv
    for bad in ('BraTS', 'LiTS=x', 'BraTS='):
        assert f"error: --select_few: expected DATASET=NAME pairs with DATASET in --datasets (ISIC, BraTS), " \
               f"got '{bad}'" in usage_error(capsys, benchmark.parse, ['--select_few', bad])


def test_a_stage1_method_chosen_with_select_few_says_so_in_its_setting(tmp_path):
    results = tmp_path / 'results'
    fake_trained_run(results, 'cam', 'cam', 0, select_few='stage2_50')
    fake_trained_run(results, 'seam', 'seam', 1)
    opt = benchmark.parse(['--result_dir', str(results), '--datasets', TINY_DATASET])
    cam, seam = (benchmark.collect(benchmark.Run(opt, TINY_DATASET, m), opt) for m in ('cam', 'seam'))
    settings = [row['training']['setting'] for row in cam]
    assert settings == ['32 px, ch 4, batch 2, chosen on val + few_sample/stage2_50'] * 2
    assert seam[0]['training']['setting'] == '32 px, ch 4, batch 2'


def test_every_method_is_refined_by_the_crf_by_default():
    opt = benchmark.parse([])
    assert set(NEW) <= set(opt.crf) and set(NEW) <= set(opt.methods)
    assert set(NEW) - {'cam'} <= set(benchmark.STAGE1_METHODS)


def _row(method, scores, fp_rate=None, auc=None, training=None):
    return {'method': method, 'scores': scores, 'fp_rate': fp_rate, 'auc': auc, 'training': training}


def test_the_papers_figures_never_fill_a_measured_cell(monkeypatch):
    # Every paper row given every figure (an impossible 0.777): it may show only in the paper column, and a
    # measured value that is missing stays a dash.
    monkeypatch.setattr(benchmark, 'PAPER', {'ISIC': {name: dict.fromkeys(SCORE_NAMES, 77.7)
                                                      for name in set(benchmark.PAPER_ROW.values())}})
    measured = dict(zip(SCORE_NAMES, (0.1, 0.2, 0.3, 0.4, 0.5)))
    rows = [_row('cam', measured, fp_rate=0.25, auc=None, training={'seconds': None, 'backbone': LITE0}),
            _row('cam+crf', measured), _row('otsu', measured, fp_rate=0.5),
            _row('cltnet_pipeline+crf', measured, training={'seconds': 120.0, 'backbone': None})]
    lines = benchmark.comparison({'ISIC': rows})
    table = [[c.strip() for c in line.strip('|').split('|')] for line in lines
             if line.startswith('| ') and not line.startswith('| method')]
    paper = ' / '.join(['0.777'] * 5)
    for cells in table:
        assert cells[1:6] == ['0.100', '0.200', '0.300', '0.400', '0.500']
        assert all('0.777' not in cell for cell in cells[:-1])
    assert [cells[-1] for cells in table] == [paper, paper, '—', paper]
    assert [cells[6:10] for cells in table] == [['0.250', '—', 'not recorded', LITE0],
                                                ['—', '—', 'training-free', '—'],
                                                ['0.500', '—', 'training-free', '—'],
                                                ['—', '—', '2.0', '—']]


def test_the_papers_figures_stand_beside_their_rows_with_a_dash_where_unknown():
    assert benchmark._paper_cell('ISIC', 'cam') == '0.681 / — / — / — / —'
    assert benchmark._paper_cell('ISIC', 'cltnet_pipeline+crf') == '0.818 / 0.889 / 0.954 / 0.863 / 0.986'
    assert benchmark._paper_cell('BraTS', 'cltnet_pipeline+crf').split(' / ')[1] == '0.873'
    for method in ('psa', 'seam', 'irn', 'pcm', 'pcm+crf', 'psa+crf', 'otsu', 'cltnet', 'cltnet_pipeline'):
        assert benchmark._paper_cell('ISIC', method) == '—'
    assert 'issue 43' in benchmark.PAPER_SOURCE


def test_results_json_and_the_detailed_tables_keep_their_shape(tmp_path, no_scripts):
    results = tmp_path / 'results'
    fake_trained_run(results, 'seam', 'seam', 3)
    out = benchmark.main(['--reuse', '--datasets', TINY_DATASET, '--methods', 'seam', '--result_dir', results,
                          '--out_dir', tmp_path / 'docs'])
    with open(tmp_path / 'docs' / 'results.json') as handle:
        assert json.load(handle) == out and list(out[TINY_DATASET]) == ['seam', 'seam+crf']
    text = (tmp_path / 'docs' / 'RESULTS.md').read_text()
    detail = text.split(f'## {TINY_DATASET}\n', 1)[1]
    assert detail.splitlines()[3].startswith('| seam | seam | 0.301 | 0.302 |')
    assert text.index('## The comparison table') < text.index(f'## {TINY_DATASET}\n')
