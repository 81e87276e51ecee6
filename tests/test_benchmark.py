"""End-to-end tests of tools/benchmark.py on the tiny dataset: RESULTS.md and results.json written from the
run folders' summaries, reuse of existing runs, the training-time record, the budget and --help."""
import json
import os
import re

import pytest
import torch

from conftest import TINY_DATASET, TINY_FOLDER, TINY_TEST_FLAGS, usage_error
from tools import benchmark
from util.checkpoints import list_checkpoints
from util.metrics import SCORE_NAMES

ROWS = ('cltnet', 'cltnet+crf', 'cam', 'cam+crf', 'otsu', 'cltnet_stage2', 'cltnet_stage2+crf', 'cltnet_stage2_few',
        'cltnet_stage2_few+crf')
SCORED = ('cltnet', 'cam', 'cltnet_stage2', 'cltnet_stage2_few')  # the methods with an image-level score


@pytest.fixture(scope='module')
def bench(tiny_dataroot, tmp_path_factory):
    """Factory ``bench(*extra)``: benchmark.main on the tiny dataset (2 iterations, tiny flags) writing
    under one module-wide folder; returns the results.json object. ``bench.root`` is that folder."""
    root = tmp_path_factory.mktemp('bench')

    def run(*extra):
        return benchmark.main(['--dataroot', tiny_dataroot, '--datasets', TINY_DATASET, '--iteration', 2,
                               '--result_dir', root / 'results', '--out_dir', root / 'docs',
                               '--args', ' '.join(TINY_TEST_FLAGS), '--train_args', '--save_freq 1',
                               '--few_sample', 'stage2_8', *extra])
    run.root = root
    run.results = run()
    return run


def _run_dir(root, method):
    return os.path.join(root, 'results', TINY_DATASET, TINY_FOLDER, method)


def _summary(root, method, stage, split):
    with open(os.path.join(_run_dir(root, method), stage, split, 'summary.json')) as handle:
        return json.load(handle)


def _table(root):
    """RESULTS.md -> (text, {method: cells after the run column}, {method: run}) of the tiny dataset's table."""
    with open(os.path.join(root, 'docs', 'RESULTS.md'), encoding='utf-8') as handle:
        text = handle.read()
    section = text.split(f'## {TINY_DATASET}\n', 1)[1].split('\n## ', 1)[0]
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in section.splitlines()
            if line.startswith('| ') and not line.startswith('| method')]
    return text, {cells[0]: cells[2:] for cells in rows}, {cells[0]: cells[1] for cells in rows}


def test_results_json_has_the_issue_shape_and_the_summaries_numbers(bench):
    with open(os.path.join(bench.root, 'docs', 'results.json')) as handle:
        results = json.load(handle)
    assert results == bench.results
    assert list(results) == [TINY_DATASET] and list(results[TINY_DATASET]) == list(ROWS)
    for row, scores in results[TINY_DATASET].items():
        method, stage = (row[:-4], 'crf') if row.endswith('+crf') else (row, 'test')
        summary = _summary(bench.root, method, stage, 'testA')
        assert list(scores) == list(SCORE_NAMES)
        assert scores == {k: summary[k] for k in SCORE_NAMES}  # exactly, not retyped
        assert all(0 <= v <= 1 for v in scores.values())


def test_results_md_tables_show_every_row_from_the_run_folders(bench):
    text, table, runs = _table(bench.root)
    assert list(table) == list(ROWS)
    for row, cells in table.items():
        method, stage = (row[:-4], 'crf') if row.endswith('+crf') else (row, 'test')
        assert runs[row] == method  # no --names: each run folder is named after its method
        summary = _summary(bench.root, method, stage, 'testA')
        testB = _summary(bench.root, method, stage, 'testB')
        assert [float(c) for c in cells[:5]] == pytest.approx([summary[k] for k in SCORE_NAMES], abs=5e-4)
        assert float(cells[5]) == pytest.approx(testB['fp_rate'], abs=5e-4)
        if row in SCORED:
            assert float(cells[6]) == pytest.approx(summary['auc'], abs=5e-4)
        else:
            assert cells[6] == '—'
        assert float(cells[11]) == pytest.approx(summary['images_per_second'], abs=0.05)
        if method == 'otsu':
            assert cells[7] == 'training-free'
        else:
            # The wall time train.py stored in the run's last checkpoint.
            seconds = benchmark.training_record(benchmark.Run(benchmark.parse(
                ['--result_dir', str(bench.root / 'results')]), TINY_DATASET, method))['seconds']
            assert cells[7] == f'{seconds:.1f} s' and cells[8].startswith('2 (chosen: ')
            pseudo = ', pseudo-masks of cltnet' if method in benchmark.STAGE2 else ''
            assert cells[9] == '32 px, ch 4, batch 1' + pseudo
    assert 'python tools/benchmark.py --dataroot' in text and '--iteration 2' in text
    assert f'torch {torch.__version__}' in text and 'logical cores' in text
    assert re.search(r'best CLTNet row cltnet(_stage2)?(\+crf)? [\d.]+ vs best baseline row', text)
    paper = text.split('## Reported in the paper (a different setup)', 1)[1]
    assert '| ISIC | CLTNet | 81.8 | 88.9 | 95.4 | 86.3 | 98.6 |' in paper
    assert '| BraTS | CAM+CRF | 63.6 | — |' in paper


def test_reuse_collects_without_rerunning_and_refreshes_stale_outputs(bench, monkeypatch):
    calls = []
    for script in ('train', 'test_script', 'crf'):
        monkeypatch.setattr(getattr(benchmark, script), 'main', lambda argv, s=script: calls.append(s))
    assert bench('--reuse') == bench.results and calls == []

    # A newer checkpoint (a run still training) makes its test.py and crf.py outputs stale.
    step, path = list_checkpoints(_run_dir(bench.root, 'cam'))[-1]
    later = os.path.getmtime(_summary_path(bench.root, 'cam', 'test', 'testA')) + 10
    os.utime(path, (later, later))
    bench('--reuse')
    assert calls == ['test_script']  # crf.py's outputs are stale only once test.py really rewrote its own


def _summary_path(root, method, stage, split):
    return os.path.join(_run_dir(root, method), stage, split, 'summary.json')


def test_existing_checkpoints_are_never_overwritten_without_reuse(bench):
    with pytest.raises(SystemExit) as info:
        bench()
    assert '--reuse' in str(info.value.code) and _run_dir(bench.root, 'cltnet') in str(info.value.code)


def test_train_seconds_stored_in_the_checkpoint_win(bench):
    run = benchmark.Run(benchmark.parse(['--result_dir', str(bench.root / 'results')]), TINY_DATASET, 'cam')
    step, path = list_checkpoints(run.dir)[-1]
    state = torch.load(path, weights_only=False)
    torch.save(dict(state, train_seconds=5400.0), path)
    record = benchmark.training_record(run)
    assert record['seconds'] == 5400.0 and record['step'] == record['planned'] == 2
    assert benchmark._duration(record['seconds']) == '90.0 min'


def test_minutes_budget_stops_a_training_that_overruns(tiny_dataroot, tmp_path, monkeypatch):
    # A probe that badly underestimates the step time: the deadline must still stop train.py.
    monkeypatch.setattr(benchmark, 'probe_iterations', lambda run, minutes, steps: (10 ** 6, 1e-6))
    results = benchmark.main(['--dataroot', tiny_dataroot, '--datasets', TINY_DATASET, '--methods', 'cam',
                              '--crf', '', '--minutes', 0.04, '--result_dir', tmp_path / 'results',
                              '--out_dir', tmp_path / 'docs', '--args', ' '.join(TINY_TEST_FLAGS)])
    assert list(results[TINY_DATASET]) == ['cam']
    with open(os.path.join(tmp_path, 'results', TINY_DATASET, TINY_FOLDER, 'cam', benchmark.TIMING_FILE)) as f:
        record = json.load(f)
    assert record['stopped_at_budget'] and 2.4 <= record['train_seconds'] < 10
    _, table, _ = _table(tmp_path)
    assert 'of 1000000 (incomplete)' in table['cam'][8]


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        benchmark.main(['--help'])
    assert info.value.code == 0
    out = capsys.readouterr().out
    parser = benchmark.build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
        assert all(flag in out for flag in action.option_strings)


def test_stage_two_rows_train_on_the_cltnet_runs_pseudo_masks(bench):
    assert os.path.isfile(os.path.join(_run_dir(bench.root, 'cltnet'), 'pseudo', 'summary.json'))
    for method, few in (('cltnet_stage2', ''), ('cltnet_stage2_few', 'stage2_8')):
        options = torch.load(list_checkpoints(_run_dir(bench.root, method))[-1][1], weights_only=False)['options']
        assert (options['model'], options['stage'], options['pseudo'], options['few_sample']) == ('seg', 2, 'cltnet', few)


def test_stage_two_without_cltnet_first_is_refused(tiny_dataroot, tmp_path, capsys):
    message = usage_error(capsys, benchmark.main, ['--dataroot', tiny_dataroot, '--datasets', TINY_DATASET,
                                                   '--methods', 'cltnet_stage2,cltnet', '--result_dir', tmp_path])
    assert 'error: --methods: cltnet_stage2 trains on the pseudo-masks of the cltnet run; list cltnet before it' \
        in message


def test_names_per_dataset_win_over_names_per_method(tmp_path, capsys):
    opt = benchmark.parse(['--result_dir', str(tmp_path), '--names',
                           'cltnet=s1,cltnet_stage2=u,ISIC/cltnet_stage2=r3,BraTS/cltnet=s1b'])
    isic, brats = (benchmark.Run(opt, dataset, 'cltnet_stage2') for dataset in ('ISIC', 'BraTS'))
    assert (isic.name, isic.pseudo_source) == ('r3', 's1')
    assert (brats.name, brats.pseudo_source) == ('u', 's1b')
    for bad in ('ISIC/unknown=x', '/cltnet=x', 'ISIC/cltnet='):
        assert f"error: --names: expected [DATASET/]METHOD=VALUE pairs with METHOD in cltnet, cam, otsu, " \
            f"cltnet_stage2, cltnet_stage2_few, got '{bad}'" in usage_error(capsys, benchmark.parse, ['--names', bad])
    # Training budgets are per method only: a dataset prefix is refused.
    message = usage_error(capsys, benchmark.parse, ['--iteration', 'ISIC/cltnet=5'])
    assert "error: --iteration: expected METHOD=VALUE pairs with METHOD in cltnet, cam, otsu, cltnet_stage2, " \
        "cltnet_stage2_few, got 'ISIC/cltnet=5'" in message
