"""End-to-end tests of tools/benchmark.py on the tiny dataset, every script run in its own process: RESULTS.md
and results.json written from the run folders' summaries and records, reuse of existing runs, the
training-time record, the budget and --help."""
import argparse
import json
import os
import re
import shutil

import pytest
import torch

from conftest import TINY_DATASET, TINY_FOLDER, TINY_TEST_FLAGS, usage_error
from tools import benchmark
from util import records
from util.checkpoints import list_checkpoints
from util.metrics import SCORE_NAMES

# Stage 1 runs once for the module: CLTNet refined by the CRF, and Otsu as the baseline. Stage 2 adds the
# few-shot U-Net on the CLTNet run's pseudo-masks (its plain twin differs only by that flag). Every script
# starts a fresh interpreter (several seconds), so each fixture runs only what its tests read.
STAGE1 = ('cltnet', 'cltnet+crf', 'otsu')
STAGE2 = STAGE1 + ('cltnet_stage2_few', 'cltnet_stage2_few+crf')
SCORED = ('cltnet', 'cltnet_stage2_few')  # the methods with an image-level score


@pytest.fixture(scope='module')
def bench(tiny_dataroot, tmp_path_factory):
    """Factory ``bench(*extra)``: benchmark.main on the tiny dataset (2 iterations, tiny flags, the STAGE1
    methods unless ``extra`` says otherwise) writing under one module-wide folder; returns the results.json
    object. ``bench.root`` is that folder, ``bench.docs`` where the first call wrote RESULTS.md and
    results.json, ``bench.scripts`` the (run, script) pairs it ran."""
    root = tmp_path_factory.mktemp('bench')

    def run(*extra):
        return benchmark.main(['--dataroot', tiny_dataroot, '--datasets', TINY_DATASET, '--iteration', 2,
                               '--methods', 'cltnet,otsu', '--result_dir', root / 'results', '--out_dir', root / 'docs',
                               '--args', ' '.join(TINY_TEST_FLAGS), '--train_args', '--save_freq 1',
                               '--few_sample', 'stage2_8', *extra])
    run.root, run.docs = root, root / 'docs'
    with pytest.MonkeyPatch.context() as monkeypatch:
        run.scripts = spy_on_scripts(monkeypatch)
        run.results = run()
    return run


@pytest.fixture(scope='module')
def stage2(bench, tmp_path_factory):
    """The stage-1 runs of ``bench`` reused, and cltnet_stage2_few trained on their pseudo-masks; its
    results.json and RESULTS.md go to ``stage2.docs``, the (run, script) pairs it ran to ``stage2.scripts``."""
    docs = tmp_path_factory.mktemp('stage2_docs')
    with pytest.MonkeyPatch.context() as monkeypatch:
        scripts = spy_on_scripts(monkeypatch)
        results = bench('--reuse', '--methods', 'cltnet,otsu,cltnet_stage2_few', '--out_dir', docs)
    return argparse.Namespace(docs=docs, scripts=scripts, results=results)


def spy_on_scripts(monkeypatch):
    """The list of (run label, script) that benchmark runs from now on; each still runs, in its own process."""
    calls, real = [], benchmark._call

    def call(run, argv, **kwargs):
        calls.append((run.label(), argv[0]))
        return real(run, argv, **kwargs)
    monkeypatch.setattr(benchmark, '_call', call)
    return calls


def _run_dir(results, method):
    return os.path.join(results, TINY_DATASET, TINY_FOLDER, method)


def _summary(results, method, stage, split):
    with open(os.path.join(_run_dir(results, method), stage, split, 'summary.json')) as handle:
        return json.load(handle)


def _table(docs):
    """RESULTS.md in ``docs`` -> (text, {method: cells after the run column}, {method: run}) of the tiny
    dataset's table."""
    with open(os.path.join(docs, 'RESULTS.md'), encoding='utf-8') as handle:
        text = handle.read()
    section = text.split(f'## {TINY_DATASET}\n', 1)[1].split('\n## ', 1)[0]
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in section.splitlines()
            if line.startswith('| ') and not line.startswith('| method')]
    return text, {cells[0]: cells[2:] for cells in rows}, {cells[0]: cells[1] for cells in rows}


def _copy_runs(bench, tmp_path):
    """A copy of the stage-1 run folders (times kept) under ``tmp_path``; returns its --result_dir."""
    results = str(tmp_path / 'results')
    shutil.copytree(bench.root / 'results', results)
    return results


@pytest.mark.parametrize('which, rows', [('bench', STAGE1), ('stage2', STAGE2)])
def test_results_json_has_the_issue_shape_and_the_summaries_numbers(which, rows, request, bench):
    ran = request.getfixturevalue(which)
    with open(os.path.join(ran.docs, 'results.json')) as handle:
        results = json.load(handle)
    assert results == ran.results
    assert list(results) == [TINY_DATASET] and list(results[TINY_DATASET]) == list(rows)
    for row, scores in results[TINY_DATASET].items():
        method, stage = (row[:-4], 'crf') if row.endswith('+crf') else (row, 'test')
        summary = _summary(bench.root / 'results', method, stage, 'testA')
        assert list(scores) == list(SCORE_NAMES)
        assert scores == {k: summary[k] for k in SCORE_NAMES}  # exactly, not retyped
        assert all(0 <= v <= 1 for v in scores.values())


@pytest.mark.parametrize('which, rows', [('bench', STAGE1), ('stage2', STAGE2)])
def test_results_md_tables_show_every_row_from_the_run_folders(which, rows, request, bench):
    ran = request.getfixturevalue(which)
    results = bench.root / 'results'
    text, table, runs = _table(ran.docs)
    assert list(table) == list(rows)
    for row, cells in table.items():
        method, stage = (row[:-4], 'crf') if row.endswith('+crf') else (row, 'test')
        assert runs[row] == method  # no --names: each run folder is named after its method
        summary = _summary(results, method, stage, 'testA')
        testB = _summary(results, method, stage, 'testB')
        chosen = records.read_record(records.test_record_path(_run_dir(results, method)))['selection']
        assert [float(c) for c in cells[:5]] == pytest.approx([summary[k] for k in SCORE_NAMES], abs=5e-4)
        assert float(cells[5]) == pytest.approx(testB['fp_rate'], abs=5e-4)
        if row in SCORED:
            assert float(cells[6]) == pytest.approx(summary['auc'], abs=5e-4)
        else:
            assert cells[6] == '—'
        assert cells[10] == chosen['map_mode']  # test.py's decision, from its record
        assert float(cells[11]) == pytest.approx(summary['images_per_second'], abs=0.05)
        if method == 'otsu':
            assert cells[7] == 'training-free'
        else:
            # The wall time train.py stored in the run's last checkpoint.
            seconds = benchmark.training_record(benchmark.Run(benchmark.parse(
                ['--result_dir', str(results)]), TINY_DATASET, method))['seconds']
            assert cells[7] == f'{seconds:.1f} s' and cells[8] == f"2 (chosen: {chosen['step']})"
            pseudo = ', pseudo-masks of cltnet' if method in benchmark.STAGE2 else ''
            assert cells[9] == '32 px, ch 4, batch 1' + pseudo
    assert 'python tools/benchmark.py --dataroot' in text and '--iteration 2' in text
    assert f'torch {torch.__version__}' in text and 'logical cores' in text
    assert re.search(r'best CLTNet row cltnet(_stage2)?(\+crf)? [\d.]+ vs best baseline row', text)
    paper = text.split('## Reported in the paper (a different setup)', 1)[1]
    assert '| ISIC | CLTNet | 81.8 | 88.9 | 95.4 | 86.3 | 98.6 |' in paper
    assert '| BraTS | CAM+CRF | 63.6 | — |' in paper


def test_each_script_ran_in_its_own_process_with_the_command_line_a_user_types(bench, tiny_dataroot):
    label = f'{TINY_DATASET}/cltnet'
    assert bench.scripts == [(label, 'train.py'), (label, 'test.py'), (label, 'crf.py'),
                             (f'{TINY_DATASET}/otsu', 'test.py')]
    run = _run_dir(bench.root / 'results', 'cltnet')
    for record in (records.test_record_path(run), records.crf_record_path(run)):
        command = records.read_record(record)['command']
        assert command.startswith(f'{os.path.basename(os.path.dirname(record))}.py --dataroot {tiny_dataroot} ')
        assert '--name cltnet --model cltnet' in command


def test_stage_two_trains_on_the_cltnet_runs_pseudo_masks(bench, stage2):
    label = f'{TINY_DATASET}/cltnet_stage2_few'
    assert stage2.scripts == [(label, 'pseudo.py'), (label, 'train.py'), (label, 'test.py'), (label, 'crf.py')]
    results = bench.root / 'results'
    assert os.path.isfile(os.path.join(_run_dir(results, 'cltnet'), 'pseudo', 'summary.json'))
    options = torch.load(list_checkpoints(_run_dir(results, 'cltnet_stage2_few'))[-1][1], weights_only=True)['options']
    assert (options['model'], options['stage'], options['pseudo'], options['few_sample']) == \
        ('seg', 2, 'cltnet', 'stage2_8')


def test_reuse_collects_without_rerunning_and_refreshes_stale_outputs(bench, tmp_path, monkeypatch):
    results = _copy_runs(bench, tmp_path)
    calls = spy_on_scripts(monkeypatch)
    assert bench('--reuse', '--result_dir', results, '--out_dir', tmp_path / 'docs') == bench.results and calls == []

    # A newer checkpoint (a run still training) makes its test.py outputs stale, and then crf.py's.
    step, path = list_checkpoints(_run_dir(results, 'cltnet'))[-1]
    later = os.path.getmtime(os.path.join(_run_dir(results, 'cltnet'), 'test', 'testA', 'summary.json')) + 10
    os.utime(path, (later, later))
    bench('--reuse', '--result_dir', results, '--out_dir', tmp_path / 'docs')
    assert calls == [(f'{TINY_DATASET}/cltnet', 'test.py'), (f'{TINY_DATASET}/cltnet', 'crf.py')]


def test_a_run_without_test_records_decision_stops_with_one_line(bench, tmp_path):
    opt = benchmark.parse(['--result_dir', _copy_runs(bench, tmp_path)])
    run = benchmark.Run(opt, TINY_DATASET, 'otsu')
    os.remove(records.test_record_path(run.dir))
    with pytest.raises(SystemExit) as info:
        benchmark.collect(run, opt)
    assert info.value.code == (f'error: {records.test_record_path(run.dir)} not found: '
                               f'run test.py for {TINY_DATASET}/otsu first')


def test_existing_checkpoints_are_never_overwritten_without_reuse(bench):
    with pytest.raises(SystemExit) as info:
        bench()
    assert '--reuse' in str(info.value.code) and _run_dir(bench.root / 'results', 'cltnet') in str(info.value.code)


def test_train_seconds_stored_in_the_checkpoint_win(bench, tmp_path):
    run = benchmark.Run(benchmark.parse(['--result_dir', _copy_runs(bench, tmp_path)]), TINY_DATASET, 'cltnet')
    step, path = list_checkpoints(run.dir)[-1]
    state = torch.load(path, weights_only=True)
    torch.save(dict(state, train_seconds=5400.0), path)
    record = benchmark.training_record(run)
    assert record['seconds'] == 5400.0 and record['step'] == record['planned'] == 2
    assert benchmark._duration(record['seconds']) == '90.0 min'


def test_a_script_that_fails_stops_the_benchmark_with_one_line(tiny_dataroot, tmp_path):
    with pytest.raises(SystemExit) as info:
        benchmark.main(['--dataroot', tiny_dataroot, '--datasets', TINY_DATASET, '--methods', 'otsu',
                        '--result_dir', tmp_path, '--args', '--no_such_flag 1'])
    assert info.value.code == f'benchmark: test.py for {TINY_DATASET}/otsu stopped (2); the run folder is ' \
                              f'{_run_dir(tmp_path, "otsu")}'


def test_minutes_budget_stops_a_training_that_overruns(tiny_dataroot, tmp_path, monkeypatch):
    # A probe that badly underestimates the step time: the deadline must still stop train.py. The budget
    # (12 s) leaves train.py time to start, on a loaded machine too, before its SIGINT arrives.
    monkeypatch.setattr(benchmark, 'probe_iterations', lambda run, minutes, steps: (10 ** 6, 1e-6))
    results = benchmark.main(['--dataroot', tiny_dataroot, '--datasets', TINY_DATASET, '--methods', 'cam',
                              '--crf', '', '--minutes', 0.2, '--result_dir', tmp_path / 'results',
                              '--out_dir', tmp_path / 'docs', '--args', ' '.join(TINY_TEST_FLAGS)])
    assert list(results[TINY_DATASET]) == ['cam']
    with open(os.path.join(_run_dir(tmp_path / 'results', 'cam'), benchmark.TIMING_FILE)) as f:
        record = json.load(f)
    assert record['stopped_at_budget'] and 12 <= record['train_seconds'] < 20
    _, table, _ = _table(tmp_path / 'docs')
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
