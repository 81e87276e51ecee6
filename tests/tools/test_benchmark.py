"""End-to-end tests of tools/benchmark.py on the tiny dataset, every script run in its own process: RESULTS.md
and results.json written from the run folders' summaries and records, reuse of existing runs, the
training-time record, the budget and --help; a finished pipeline.py run (its record and release run, as small
files) read, never run, and the README headline section."""
import argparse
import json
import os
import re
import shutil

import pytest
import torch

from conftest import TINY_DATASET, TINY_FOLDER, TINY_TEST_FLAGS, help_text, usage_error
from fake_run import write_json
from tools import benchmark
from records import record_io as records
from records import run_folder as rf
from records.run_folder import benchmark_timing_path, list_checkpoints
from evaluation.metrics import SCORE_NAMES
from models.base_model import CHECKPOINT_FORMAT

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


# A finished pipeline "p" as pipeline.py leaves it (fake_pipeline): stage 1 from a file, two rounds, the second
# chosen. Its release summaries hold values no tiny run gives, so a row can only have them from there.
PIPELINE_SCORES = {'test': dict(JA=0.611, DI=0.722, AC=0.933, SE=0.644, SP=0.955),
                   'crf': dict(JA=0.666, DI=0.777, AC=0.944, SE=0.688, SP=0.966)}
PIPELINE_FP = {'test': 0.5, 'crf': 0.25}
ROUND_SECONDS = {'r1_train': 300.0, 'r2_train': 600.0}


def fake_pipeline(results, name='p'):
    """<name>/pipeline.json, the chosen round's checkpoint (the tiny cltnet run's, stored as a stage-2 run's) and
    the release run's summaries and records of a finished pipeline under ``results``; returns the record."""
    steps = {step: {'argv': [f'{step}.py'], 'status': 'done', 'seconds': ROUND_SECONDS.get(step, 1000.0)}
             for step in ('stage1_test', 'stage1_crf', 'stage1_pseudo', 'r1_train', 'r1_test', 'r1_crf', 'r1_pseudo',
                          'r2_train', 'r2_test', 'r2_crf', 'cascade', 'release_test', 'release_crf', 'release_export')}
    steps['stage1_test']['argv'] = ['test.py', '--splits', 'val', '--weights', 'weights/tiny_stage1.pt']
    steps['release_export']['argv'] = ['-m', 'tools.export_weights', '--out', 'weights/tiny.pt']
    record = {'steps': steps, 'choose': {'rule': 'best val DI after the CRF', 'chosen': f'{name}_r2',
                                         'ranking': [{'run': f'{name}_r1', 'val_DI_after_crf': 0.5},
                                                     {'run': f'{name}_r2', 'val_DI_after_crf': 0.6}]}}
    write_json(os.path.join(_run_dir(results, name), 'pipeline.json'), record)
    state = torch.load(list_checkpoints(_run_dir(results, 'cltnet'))[-1][1], weights_only=True)
    state['step'], state['train_seconds'] = 12, 1.0
    state['options'].update(stage=2, pseudo=f'{name}_r1', iteration=12)
    os.makedirs(os.path.join(_run_dir(results, f'{name}_r2'), 'checkpoints'))
    torch.save(state, os.path.join(_run_dir(results, f'{name}_r2'), 'checkpoints', 'iter_0000012.pt'))
    release = _run_dir(results, f'{name}_release')
    write_json(rf.test_record_path(release), {'selection': {'step': 9, 'map_mode': 'seg', 'chosen_on': 'val'}})
    write_json(rf.crf_record_path(release), {'selection': {'crf': {'alpha': 1.0}, 'chosen_on': 'val'}})
    for stage in ('test', 'crf'):
        write_json(os.path.join(release, stage, 'testA', 'summary.json'),
                   {**PIPELINE_SCORES[stage], 'images_per_second': 12.5, **({'auc': 0.875} if stage == 'test' else {})})
        write_json(os.path.join(release, stage, 'testB', 'summary.json'), {'fp_rate': PIPELINE_FP[stage]})
    return record


def _copy_runs(bench, tmp_path):
    """A copy of the stage-1 run folders (times kept) under ``tmp_path``; returns its --result_dir."""
    results = str(tmp_path / 'results')
    shutil.copytree(bench.root / 'results', results)
    return results


@pytest.mark.slow
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


@pytest.mark.slow
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
        chosen = records.read_record(rf.test_record_path(_run_dir(results, method)))['selection']
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
    assert 'python -m tools.benchmark --dataroot' in text and '--iteration 2' in text
    assert f'torch {torch.__version__}' in text and 'logical cores' in text
    assert re.search(r'best CLTNet row cltnet(_stage2)?(\+crf)? [\d.]+ vs best baseline row', text)
    paper = text.split('## Reported in the paper (a different setup)', 1)[1]
    assert '| ISIC | CLTNet | 81.8 | 88.9 | 95.4 | 86.3 | 98.6 |' in paper
    assert '| BraTS | CAM+CRF | 63.6 | — |' in paper


@pytest.mark.slow
def test_each_script_ran_in_its_own_process_with_the_command_line_a_user_types(bench, tiny_dataroot):
    label = f'{TINY_DATASET}/cltnet'
    assert bench.scripts == [(label, 'train.py'), (label, 'test.py'), (label, 'crf.py'),
                             (f'{TINY_DATASET}/otsu', 'test.py')]
    run = _run_dir(bench.root / 'results', 'cltnet')
    for record in (rf.test_record_path(run), rf.crf_record_path(run)):
        command = records.read_record(record)['command']
        assert command.startswith(f'{os.path.basename(os.path.dirname(record))}.py --dataroot {tiny_dataroot} ')
        assert '--name cltnet --model cltnet' in command


@pytest.mark.slow
def test_stage_two_trains_on_the_cltnet_runs_pseudo_masks(bench, stage2):
    label = f'{TINY_DATASET}/cltnet_stage2_few'
    assert stage2.scripts == [(label, 'pseudo.py'), (label, 'train.py'), (label, 'test.py'), (label, 'crf.py')]
    results = bench.root / 'results'
    assert os.path.isfile(os.path.join(_run_dir(results, 'cltnet'), 'pseudo', 'summary.json'))
    options = torch.load(list_checkpoints(_run_dir(results, 'cltnet_stage2_few'))[-1][1], weights_only=True)['options']
    assert (options['model'], options['stage'], options['pseudo'], options['few_sample']) == \
        ('seg', 2, 'cltnet', 'stage2_8')


@pytest.mark.slow
def test_reuse_collects_without_rerunning_and_refreshes_stale_outputs(bench, tmp_path, monkeypatch):
    results = _copy_runs(bench, tmp_path)
    calls = spy_on_scripts(monkeypatch)
    assert bench('--reuse', '--result_dir', results, '--out_dir', tmp_path / 'docs') == bench.results and calls == []

    # A newer mtime alone changes nothing (freshness is by digest, as pipeline.py's); a changed checkpoint (a
    # run still training) makes its test.py outputs stale, and then crf.py's.
    step, path = list_checkpoints(_run_dir(results, 'cltnet'))[-1]
    later = os.path.getmtime(os.path.join(_run_dir(results, 'cltnet'), 'test', 'testA', 'summary.json')) + 10
    os.utime(path, (later, later))
    bench('--reuse', '--result_dir', results, '--out_dir', tmp_path / 'docs')
    assert calls == []
    torch.save(dict(torch.load(path, weights_only=True), train_seconds=7.0), path)
    bench('--reuse', '--result_dir', results, '--out_dir', tmp_path / 'docs')
    assert calls == [(f'{TINY_DATASET}/cltnet', 'test.py'), (f'{TINY_DATASET}/cltnet', 'crf.py')]


@pytest.mark.slow
def test_a_run_without_test_records_decision_stops_with_one_line(bench, tmp_path):
    opt = benchmark.parse(['--result_dir', _copy_runs(bench, tmp_path)])
    run = benchmark.Run(opt, TINY_DATASET, 'otsu')
    os.remove(rf.test_record_path(run.dir))
    with pytest.raises(SystemExit) as info:
        benchmark.collect(run, opt)
    assert info.value.code == (f'error: {rf.test_record_path(run.dir)} not found: '
                               f'run test.py for {TINY_DATASET}/otsu first')


@pytest.mark.slow
def test_existing_checkpoints_are_never_overwritten_without_reuse(bench):
    with pytest.raises(SystemExit) as info:
        bench()
    assert '--reuse' in str(info.value.code) and _run_dir(bench.root / 'results', 'cltnet') in str(info.value.code)


@pytest.mark.slow
def test_train_seconds_stored_in_the_checkpoint_win(bench, tmp_path):
    run = benchmark.Run(benchmark.parse(['--result_dir', _copy_runs(bench, tmp_path)]), TINY_DATASET, 'cltnet')
    step, path = list_checkpoints(run.dir)[-1]
    state = torch.load(path, weights_only=True)
    torch.save(dict(state, train_seconds=5400.0), path)
    record = benchmark.training_record(run)
    assert record['seconds'] == 5400.0 and record['step'] == record['planned'] == 2
    assert benchmark._duration(record['seconds']) == '90.0 min'


@pytest.mark.slow
def test_a_script_that_fails_stops_the_benchmark_with_one_line(tiny_dataroot, tmp_path):
    with pytest.raises(SystemExit) as info:
        benchmark.main(['--dataroot', tiny_dataroot, '--datasets', TINY_DATASET, '--methods', 'otsu',
                        '--result_dir', tmp_path, '--args', '--no_such_flag 1'])
    assert info.value.code == f'benchmark: test.py for {TINY_DATASET}/otsu stopped (2); the run folder is ' \
                              f'{_run_dir(tmp_path, "otsu")}'


@pytest.mark.slow
def test_minutes_budget_stops_a_training_that_overruns(tiny_dataroot, tmp_path, monkeypatch):
    # A probe that badly underestimates the step time: the deadline must still stop train.py. The budget
    # (12 s) leaves train.py time to start, on a loaded machine too, before its SIGINT arrives.
    monkeypatch.setattr(benchmark, 'probe_iterations', lambda run, minutes, steps: (10 ** 6, 1e-6))
    results = benchmark.main(['--dataroot', tiny_dataroot, '--datasets', TINY_DATASET, '--methods', 'cam',
                              '--crf', '', '--minutes', 0.2, '--result_dir', tmp_path / 'results',
                              '--out_dir', tmp_path / 'docs', '--args', ' '.join(TINY_TEST_FLAGS)])
    assert list(results[TINY_DATASET]) == ['cam']
    with open(benchmark_timing_path(_run_dir(tmp_path / 'results', 'cam'))) as f:
        record = json.load(f)
    assert record['stopped_at_budget'] and 12 <= record['train_seconds'] < 20
    _, table, _ = _table(tmp_path / 'docs')
    assert 'of 1000000 (incomplete)' in table['cam'][8]


def test_help_documents_every_flag(capsys):
    out = help_text(capsys, benchmark.main)
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
        assert f"error: --names: expected [DATASET/]METHOD=VALUE pairs with METHOD in cltnet, cam, pcm, seam, psa, " \
            f"irn, otsu, cltnet_stage2, cltnet_stage2_few, cltnet_pipeline, cam_pipeline, got '{bad}'" in usage_error(
                capsys, benchmark.parse, ['--names', bad])
    # Training budgets are per method only: a dataset prefix is refused.
    message = usage_error(capsys, benchmark.parse, ['--iteration', 'ISIC/cltnet=5'])
    assert "error: --iteration: expected METHOD=VALUE pairs with METHOD in cltnet, cam, pcm, seam, psa, irn, otsu, " \
        "cltnet_stage2, cltnet_stage2_few, cltnet_pipeline, cam_pipeline, got 'ISIC/cltnet=5'" in message
    # A pipeline's run is its release run, beside its record; the command to build it names the dataset's recipe.
    opt = benchmark.parse(['--result_dir', str(tmp_path), '--names', 'BraTS/cltnet_pipeline=brats'])
    pipeline = benchmark.Run(opt, 'BraTS', 'cltnet_pipeline')
    assert pipeline.dir == os.path.join(str(tmp_path), 'BraTS', 'brats_1', 'brats_release')
    assert pipeline.record == os.path.join(str(tmp_path), 'BraTS', 'brats_1', 'brats', 'pipeline.json')
    assert pipeline.command == (f'python pipeline.py --dataroot ./dataset --dataset BraTS --recipe recipes/BraTS.toml '
                                f'--name brats --result_dir {tmp_path}')
    assert benchmark.Run(opt, 'ISIC', 'cltnet_pipeline').name == 'cltnet_pipeline'
    # The CAM path's pipeline is read the same way; its recipe is the user's, not the released one.
    opt = benchmark.parse(['--result_dir', str(tmp_path), '--names', 'BraTS/cam_pipeline=cam_path'])
    cam_path = benchmark.Run(opt, 'BraTS', 'cam_pipeline')
    assert cam_path.pipeline and not cam_path.trained
    assert cam_path.dir == os.path.join(str(tmp_path), 'BraTS', 'brats_1', 'cam_path_release')
    assert ' --recipe RECIPE.toml --name cam_path ' in cam_path.command


def _finished_pipeline(results, name, stage1_model):
    """A finished pipeline's record and release summaries under ``results`` whose release step served a two-stage
    file with that stage-1 model (only what read_pipeline reads)."""
    served = os.path.join(results, f'{name}.pt')
    architecture = {'model': 'cascade', 'img_size': 32, 'img_ch': 3, 'seg_ch': 4,
                    **({} if stage1_model == 'cltnet' else {'stage1_model': stage1_model})}
    torch.save({'format': CHECKPOINT_FORMAT, 'architecture': architecture}, served)
    record = {'steps': {'release_test': {'argv': ['test.py', '--weights', served], 'status': 'done', 'seconds': 1.0}},
              'choose': {'chosen': f'{name}_r1'}}
    write_json(os.path.join(_run_dir(results, name), 'pipeline.json'), record)
    release = _run_dir(results, f'{name}_release')
    for stage, path in (('test', rf.test_record_path(release)), ('crf', rf.crf_record_path(release))):
        write_json(path, {'selection': {}})
        for split in ('testA', 'testB'):
            write_json(os.path.join(release, stage, split, 'summary.json'), {})


def test_a_pipeline_read_as_the_other_path_stops_naming_the_method_it_is(tmp_path):
    results = str(tmp_path)
    _finished_pipeline(results, 'from_cam', 'cam')
    _finished_pipeline(results, 'from_cltnet', 'cltnet')
    opt = benchmark.parse(['--result_dir', results, '--datasets', TINY_DATASET,
                           '--names', 'cam_pipeline=from_cam,cltnet_pipeline=from_cltnet'])
    for method in ('cam_pipeline', 'cltnet_pipeline'):
        assert benchmark.read_pipeline(benchmark.Run(opt, TINY_DATASET, method), opt)['choose']
    swapped = benchmark.parse(['--result_dir', results, '--datasets', TINY_DATASET,
                               '--names', 'cam_pipeline=from_cltnet,cltnet_pipeline=from_cam'])
    for method, name, model, fix in (('cltnet_pipeline', 'from_cam', 'cam', 'cam_pipeline'),
                                     ('cam_pipeline', 'from_cltnet', 'cltnet', 'cltnet_pipeline')):
        with pytest.raises(SystemExit) as info:
            benchmark.read_pipeline(benchmark.Run(swapped, TINY_DATASET, method), swapped)
        assert str(info.value) == (f"error: pipeline {name}'s stage 1 is --model {model}, not {method}'s "
                                   f"{benchmark.PIPELINES[method]}: name it with --names {TINY_DATASET}/{fix}={name}")


README_BEFORE = '# Project\n\nIntro, kept as it is.\n\n'
README_AFTER = '\n\n## Next section\n\nAlso kept.\n'


@pytest.mark.slow
def test_pipeline_rows_come_from_its_release_run_and_nothing_of_it_runs(bench, tmp_path, monkeypatch):
    results = _copy_runs(bench, tmp_path)
    fake_pipeline(results)
    readme = tmp_path / 'README.md'
    readme.write_text(README_BEFORE + '<!-- results start -->\nold numbers\n<!-- results end -->' + README_AFTER)
    calls = spy_on_scripts(monkeypatch)
    argv = ('--reuse', '--result_dir', results, '--out_dir', tmp_path / 'docs', '--methods',
            'cltnet,otsu,cltnet_pipeline', '--names', 'cltnet_pipeline=p', '--readme', readme)
    out = bench(*argv)
    assert calls == []  # the stage-1 runs reused, the pipeline only read
    assert list(out[TINY_DATASET]) == ['cltnet', 'cltnet+crf', 'otsu', 'cltnet_pipeline', 'cltnet_pipeline+crf']
    assert out[TINY_DATASET]['cltnet_pipeline'] == PIPELINE_SCORES['test']
    assert out[TINY_DATASET]['cltnet_pipeline+crf'] == PIPELINE_SCORES['crf']
    text, table, runs = _table(tmp_path / 'docs')
    assert runs['cltnet_pipeline'] == runs['cltnet_pipeline+crf'] == 'p'
    setting = '32 px, ch 4, batch 1, pseudo-masks of p_r1; round p_r2 of 2, by best val DI after the CRF'
    for row, stage in (('cltnet_pipeline', 'test'), ('cltnet_pipeline+crf', 'crf')):
        cells = table[row]
        assert [float(c) for c in cells[:5]] == list(PIPELINE_SCORES[stage].values())
        assert float(cells[5]) == PIPELINE_FP[stage] and cells[6] == ('0.875' if stage == 'test' else '—')
        # Only the rounds' training steps count (900 s), stage 1 came from a file; the chosen round's
        # checkpoint gives the steps and setting, the release test record the chosen step.
        assert cells[7:11] == ['15.0 min (stage 2 only: stage 1 from weights/tiny_stage1.pt)', '12 (chosen: 9)',
                               setting, 'seg']
        assert cells[11] == '12.5'
    assert re.search(r'best CLTNet row cltnet(_pipeline)?(\+crf)? [\d.]+ vs best baseline row otsu', text)

    # The README: only the section between the markers is rewritten, from the same rows; a second run
    # writes the same section again.
    written = readme.read_text()
    assert written.startswith(README_BEFORE + '<!-- results start -->\n## How well it works\n')
    assert written.endswith('<!-- results end -->' + README_AFTER) and 'old numbers' not in written
    otsu = out[TINY_DATASET]['otsu']['DI']
    # No CAM-family method among these: a dash for the best baseline (stage 1 and Otsu are not one).
    assert f'| {TINY_DATASET} | `weights/tiny.pt`: 0.722 -> 0.777 | 0.25 | — | {otsu:.3f} | — |' in written
    assert '`python -m tools.benchmark --dataroot ' in written and '[docs/RESULTS.md](docs/RESULTS.md)' in written
    bench(*argv)
    assert readme.read_text() == written


@pytest.mark.slow
def test_pipeline_training_counts_a_stage_1_it_trained(bench, tmp_path):
    results = _copy_runs(bench, tmp_path)
    record = fake_pipeline(results)
    record['steps']['stage1'] = {'argv': ['train.py'], 'status': 'done', 'seconds': 210.0}
    write_json(os.path.join(_run_dir(results, 'p'), 'pipeline.json'), record)
    opt = benchmark.parse(['--result_dir', results, '--names', 'cltnet_pipeline=p'])
    training = benchmark.training_record(benchmark.Run(opt, TINY_DATASET, 'cltnet_pipeline'))
    assert training['seconds'] == 1110.0 and training['note'] is None
    assert (training['step'], training['planned']) == (12, 12)
    # The backbone of each stage: stage 1's from the two-stage file the release step served.
    served = tmp_path / 'cascade.pt'
    architecture = {'model': 'cascade', 'img_size': 32, 'img_ch': 3, 'seg_ch': 4, 'encoder': benchmark.LITE0}
    torch.save({'format': CHECKPOINT_FORMAT, 'architecture': architecture}, served)
    record['steps']['release_test']['argv'] = ['test.py', '--weights', str(served)]
    write_json(os.path.join(_run_dir(results, 'p'), 'pipeline.json'), record)
    training = benchmark.training_record(benchmark.Run(opt, TINY_DATASET, 'cltnet_pipeline'))
    assert training['backbone'] == f'{benchmark.LITE0} (stage 1), scratch (stage-2 U-Net)'


@pytest.mark.slow
def test_a_pipeline_not_run_or_not_finished_stops_before_anything_runs(bench, tiny_dataroot, tmp_path, monkeypatch):
    calls = spy_on_scripts(monkeypatch)
    argv = ['--dataroot', tiny_dataroot, '--datasets', TINY_DATASET, '--methods', 'otsu,cltnet_pipeline',
            '--names', 'cltnet_pipeline=p', '--result_dir', str(tmp_path / 'fresh')]
    command = (f'python pipeline.py --dataroot {tiny_dataroot} --dataset {TINY_DATASET} --recipe RECIPE.toml '
               f'--name p --result_dir {tmp_path / "fresh"}')

    def error():
        with pytest.raises(SystemExit) as info:
            benchmark.main(argv)
        return info.value.code
    missing = os.path.join(_run_dir(tmp_path / 'fresh', 'p'), 'pipeline.json')
    assert error() == f'error: {missing} not found: run the pipeline first: {command}'
    assert calls == []  # otsu, listed first, was not tested either

    results = _copy_runs(bench, tmp_path)
    record = fake_pipeline(results)
    argv[-1], command = results, command.replace(str(tmp_path / 'fresh'), results)
    summary = os.path.join(_run_dir(results, 'p_release'), 'crf', 'testB', 'summary.json')
    os.remove(summary)
    assert error() == f'error: {summary} not found: run the pipeline first: {command}'
    write_json(summary, {'fp_rate': PIPELINE_FP['crf']})
    # A pipeline run again (a step redone) is read only once it has finished.
    path = os.path.join(_run_dir(results, 'p'), 'pipeline.json')
    record['steps']['r2_train']['status'] = 'started'
    write_json(path, record)
    assert error() == f'error: {path}: step r2_train has not finished: run the pipeline to its end: {command}'
    assert calls == []



def test_verdict_weighs_the_pipeline_rows_and_names_the_released_file():
    def rows(released_di):
        return [{'method': method, 'scores': {'DI': di}} for method, di in (
            ('cltnet+crf', 0.8), ('otsu', 0.7), ('cltnet_pipeline', 0.65), ('cltnet_pipeline+crf', released_di))]
    head = 'DI: best CLTNet row {} vs best baseline row otsu 0.700: CLTNet is ahead.'
    assert benchmark.verdict(rows(0.9)) == head.format('cltnet_pipeline+crf 0.900')
    assert benchmark.verdict(rows(0.75)) == head.format('cltnet+crf 0.800') + \
        ' The released file (cltnet_pipeline+crf 0.750) is ahead.'
    assert benchmark.verdict(rows(0.6)) == head.format('cltnet+crf 0.800') + \
        ' The released file (cltnet_pipeline 0.650) is NOT ahead.'


def test_readme_section_gives_the_papers_figure_and_a_dash_for_each_missing_row(tmp_path, capsys):
    readme = tmp_path / 'README.md'
    readme.write_text('# Project\n')
    opt = benchmark.parse(['--readme', str(readme), '--out_dir', str(tmp_path / 'docs')])
    section = benchmark.headline({'ISIC': [], 'BraTS': []}, opt)
    assert section.startswith('<!-- results start -->\n## How well it works\n')
    assert section.endswith('<!-- results end -->')
    assert '| ISIC | — | — | — | — | 0.889 |' in section
    assert '| BraTS | — | — | — | — | 0.873 |' in section
    # The best baseline of the CAM family, with or without the CRF, by name; CLTNet's own rows and Otsu are not one.
    rows = [{'method': method, 'scores': {'DI': di}} for method, di in (
        ('cam', 0.5), ('seam+crf', 0.7), ('psa', 0.6), ('otsu', 0.8), ('cltnet+crf', 0.9))]
    assert '| ISIC | — | — | SEAM+CRF 0.700 | 0.800 | 0.889 |' in benchmark.headline({'ISIC': rows}, opt)
    # A release written under the result folder is named by its pipeline; one written into weights/ by its path.
    for file, named in (('../runs/ISIC/isic_1/isic/release.pt', 'pipeline `isic`'),
                        ('weights/ISIC.pt', '`weights/ISIC.pt`')):
        release = [{'method': method, 'run': 'isic', 'file': file, 'fp_rate': 0.04, 'scores': {'DI': di}}
                   for method, di in (('cltnet_pipeline', 0.78), ('cltnet_pipeline+crf', 0.8))]
        assert f'| ISIC | {named}: 0.780 -> 0.800 | 0.04 | — |' in benchmark.headline({'ISIC': release}, opt)
    assert benchmark._minutes({'seconds': 750, 'note': 'stage 2 only: stage 1 from weights/ISIC_stage1.pt'}) \
        == '12.5 (stage 2 only)'
    assert benchmark._minutes({'seconds': 750}) == '12.5' and benchmark._minutes(None) == 'training-free'
    missing = tmp_path / 'none.md'
    assert f'error: --readme: {missing} not found (the section goes into an existing file)' in usage_error(
        capsys, benchmark.parse, ['--readme', str(missing)])


def test_stage1_recipes_give_cltnet_and_cam_the_recipes_stage_1_flags(tmp_path, capsys):
    recipes = tmp_path / 'recipes'
    recipes.mkdir()
    (recipes / 'ISIC.toml').write_text('[common]\nnum_workers = 1\n[stage1]\niteration = 30\nrot90 = true\n'
                                       '[stage2]\niteration = 7\n')
    opt = benchmark.parse(['--result_dir', str(tmp_path), '--stage1_recipes', str(recipes),
                           '--args', '--num_threads 1', '--train_args', '--iteration 40'])
    cam = benchmark.Run(opt, 'ISIC', 'cam').train_argv
    assert cam[cam.index('--model') + 2:] == ['--num_workers', '1', '--iteration', '30', '--rot90', 'True',
                                              '--num_threads', '1', '--display_id', '0', '--iteration', '40']
    for method in ('cltnet', 'pcm', 'seam', 'psa', 'irn'):
        assert '--rot90' in benchmark.Run(opt, 'ISIC', method).train_argv
    for method in ('otsu', 'cltnet_stage2'):
        assert '--rot90' not in benchmark.Run(opt, 'ISIC', method).train_argv
    assert '--rot90' not in benchmark.Run(benchmark.parse(['--result_dir', str(tmp_path)]), 'ISIC', 'cam').train_argv
    with pytest.raises(SystemExit, match=r'error: --stage1_recipes: .*BraTS\.toml not found'):
        benchmark.Run(opt, 'BraTS', 'cam')
