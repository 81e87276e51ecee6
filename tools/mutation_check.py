"""Plant one-line defects in a temporary copy of the repository, one at a time, and check that the tests
named for each one fail ('killed') rather than pass ('SURVIVED').

    python -m tools.mutation_check                        # every mutation (minutes; not part of CI)
    python -m tools.mutation_check --only fused,auc       # those whose names start with these
    python -m tools.mutation_check --list                 # names, files and tests, nothing run

The copy holds the files git tracks plus the untracked ones it does not ignore, as they are in the working
tree (uncommitted changes count); the working tree itself is never written. The named tests first run
unmutated and must pass. A mutation's snippet must occur exactly once in its file: one that is missing or
ambiguous (the code moved or changed) is reported as an error, so this list is kept in step with the code.
Exit status 0 when every mutation was killed, 1 otherwise.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple


class Mutation(NamedTuple):
    name: str
    path: str         # relative to the repository root
    original: str     # the exact snippet, found exactly once in the file
    replacement: str
    tests: tuple      # pytest node ids that must fail once it is planted
    defect: str       # what a user would get


MAPS_TEST = 'tests/models/test_cltnet_model.py::test_lesion_maps_match_values_worked_out_by_hand'
WEIGHTS_TEST = 'tests/models/test_cltnet_model.py::test_each_loss_weight_scales_exactly_the_loss_it_names'
TEST_FIGURES = ('tests/scripts/test_test_script.py::'
                'test_testB_rate_and_testA_auc_are_those_of_the_written_masks_and_the_scores')
EXPORT_TESTS = ('tests/tools/test_export_weights.py::test_weights_hold_the_chosen_checkpoints_A_to_B_generator',
                'tests/tools/test_export_weights.py::test_weights_work_on_a_folder_with_only_testA_and_testB')
GRID_TEST = 'tests/scripts/test_crf.py::test_grid_has_the_readmes_size_and_crf_runs_per_image'
TEST_SELECTION_TEST = 'tests/scripts/test_test_script.py::test_selection_never_reads_testA_labels'
CRF_SELECTION_TEST = 'tests/scripts/test_crf.py::test_selection_reads_only_val_labels'


def _weight_swap(loss, weight, other):
    return Mutation(f'{loss}-uses-{other}', 'models/cltnet_model.py', f'self.loss_G_{loss} = opt.{weight} * (',
                    f'self.loss_G_{loss} = opt.{other} * (', (WEIGHTS_TEST,), f'G_{loss} scaled by --{other}')


MUTATIONS = [
    Mutation('fused-without-sqrt', 'models/cltnet_model.py',
             "'fused': (attention * difference).clamp_min(0).sqrt()[:, 0],",
             "'fused': (attention * difference).clamp_min(0)[:, 0],", (MAPS_TEST,),
             'fused map is the product, not the geometric mean'),
    Mutation('cam-unweighted', 'models/cltnet_model.py', "'cam': heatmap * score[:, None, None]}",
             "'cam': heatmap}", (MAPS_TEST,), 'cam map not weighted by the lesion probability'),
    Mutation('difference-unsmoothed', 'models/cltnet_model.py',
             'difference = gaussian_blur(difference, [2 * round(2 * sigma) + 1] * 2, [sigma, sigma])',
             'difference = difference.clone()', (MAPS_TEST,), 'difference map without its Gaussian smoothing'),
    Mutation('fp-rate-test', 'test.py', 'summary.update(fp_rate=float(np.mean([a > 0 for a in areas])),',
             'summary.update(fp_rate=float(np.mean(areas)),', (TEST_FIGURES,),
             "test.py's testB fp_rate is the mean predicted area"),
    Mutation('fp-rate-crf', 'crf.py', "return {'fp_rate': float(np.mean([m.any() for m in masks])),",
             "return {'fp_rate': float(np.mean([m.mean() for m in masks])),",
             ('tests/scripts/test_crf.py::test_testB_figures_are_those_of_the_written_masks',),
             "crf.py's testB fp_rate is the mean predicted area"),
    Mutation('auc-labels-swapped', 'test.py', "[1] * len(scores['testA']) + [0] * len(scores['testB'])",
             "[0] * len(scores['testA']) + [1] * len(scores['testB'])", (TEST_FIGURES,),
             "testA's AUC computed with testA as the negatives"),
    Mutation('export-G_BA', 'tools/export_weights.py', "for k, v in state['nets'][name].items()}",
             "for k, v in state['nets'][name.replace('G_AB', 'G_BA')].items()}", EXPORT_TESTS,
             'the weights file holds the lesion-adding generator'),
    _weight_swap('cam', 'cam_weight', 'recon_weight'),
    _weight_swap('recon', 'recon_weight', 'cam_weight'),
    _weight_swap('cycle', 'cycle_weight', 'identity_weight'),
    _weight_swap('identity', 'identity_weight', 'cycle_weight'),
    Mutation('test-chooses-on-testA', 'test.py', "val = split_pairs(data_dir, 'val', opt)",
             "val = split_pairs(data_dir, 'testA', opt)", (TEST_SELECTION_TEST,),
             'test.py chooses checkpoint, map and threshold on testA'),
    Mutation('crf-searches-on-testA', 'crf.py', "split_items(opt, run, 'val', rule)\n",
             "split_items(opt, run, 'testA', rule)\n", (CRF_SELECTION_TEST,), 'crf.py chooses its parameters on testA'),
    Mutation('crf-grid-grows', 'refinement/crf_utils.py', 'in itertools.product(COLOUR_WEIGHTS, (1, 2, 4), widths,',
             'in itertools.product(COLOUR_WEIGHTS, (1, 2, 4, 8), widths,', (GRID_TEST,),
             'a CRF grid of another size than the README says'),
    Mutation('crf-runs-not-shared', 'refinement/crf_utils.py', "return replace(combo, n_iter=1, postprocess='none')",
             'return combo', (GRID_TEST,), 'a CRF run per setting: n_iter and post-processing share none'),
    Mutation('read-only-not-checked', 'util/preflight.py', 'with tempfile.TemporaryFile(dir=base):',
             'with open(os.devnull, "w"):',
             ('tests/scripts/test_fault_injection.py::test_read_only_result_dir_is_refused_before_anything_runs',),
             'a read-only --result_dir found only when the first file is written'),
    Mutation('pseudo-confidence-noisy', 'pseudo.py',
             'np.round(confidence * 255)', 'np.round(confidence * 255 + np.random.rand(*mask.shape))',
             ('tests/scripts/test_pseudo.py::test_pseudo_masks_are_deterministic',),
             'pseudo-mask confidence PNGs differ from run to run'),
]


def parse(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tools.mutation_check', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', default='', metavar='NAMES',
                        help='comma-separated mutation names or name prefixes to run (default: every mutation)')
    parser.add_argument('--list', action='store_true', help='print the mutations and their tests, run nothing')
    parser.add_argument('--python', default=sys.executable,
                        help=f'interpreter that runs pytest in the copy (default: this one, {sys.executable})')
    args = parser.parse_args(argv)
    wanted = [w for w in args.only.split(',') if w]
    unknown = [w for w in wanted if not any(m.name.startswith(w) for m in MUTATIONS)]
    if unknown:
        parser.error(f"--only: no mutation named {', '.join(unknown)}; names: "
                     + ', '.join(m.name for m in MUTATIONS))
    args.mutations = [m for m in MUTATIONS if not wanted or any(m.name.startswith(w) for w in wanted)]
    return args


def copy_repository(root, target):
    """Copy the tracked and the untracked, not ignored files of ``root`` (as they are now) to ``target``."""
    listed = subprocess.run(['git', '-C', root, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                            check=True, capture_output=True).stdout.decode().split('\0')
    for relative in filter(None, listed):
        source = os.path.join(root, relative)
        if os.path.isfile(source):  # a tracked file deleted in the working tree is not copied
            os.makedirs(os.path.dirname(os.path.join(target, relative)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, relative))


def run_tests(python, copy, tests, basetemp):
    """(pytest exit status, its output) of ``tests`` run in the copy, stopping at the first failure."""
    # No bytecode: a restored file may keep its size and mtime second, and a stale .pyc would then run.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    done = subprocess.run([python, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', f'--basetemp={basetemp}',
                           *tests], cwd=copy, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def first_failure(output):
    """The node id of the first FAILED/ERROR line of pytest's summary, or ''."""
    for line in output.splitlines():
        if line.startswith(('FAILED ', 'ERROR ')):
            return line.split()[1]
    return ''


def check(mutation, python, copy, basetemp):
    """('killed' | 'SURVIVED' | 'error', detail) of one mutation planted in ``copy`` (restored afterwards)."""
    path = os.path.join(copy, mutation.path)
    if not os.path.isfile(path):
        return 'error', f'{mutation.path} not found'
    with open(path, encoding='utf-8') as handle:
        text = handle.read()
    count = text.count(mutation.original)
    if count != 1:
        return 'error', f'snippet found {count} times in {mutation.path} (expected once): {mutation.original!r}'
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(text.replace(mutation.original, mutation.replacement))
    try:
        status, output = run_tests(python, copy, mutation.tests, basetemp)
    finally:
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(text)
    if status == 1:
        return 'killed', f'by {first_failure(output)}'
    if status == 0:
        return 'SURVIVED', 'tests passed: ' + ' '.join(mutation.tests)
    return 'error', f'pytest exit status {status}:\n' + '\n'.join(output.splitlines()[-15:])


def main(argv=None):
    args = parse(argv)
    if args.list:
        for m in args.mutations:
            print(f'{m.name}: {m.path}: {m.defect}\n    {m.original!r}\n -> {m.replacement!r}\n    tests: '
                  + ' '.join(m.tests))
        return 0
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tempfile.mkdtemp(prefix='mutation_check_')
    copy, basetemp = os.path.join(work, 'repo'), os.path.join(work, 'pytest')
    try:
        copy_repository(root, copy)
        tests = list(dict.fromkeys(t for m in args.mutations for t in m.tests))
        print(f'unmutated: {len(tests)} test(s) in a copy at {copy} ...', flush=True)
        status, output = run_tests(args.python, copy, tests, basetemp)
        if status != 0:
            print(output[-3000:])
            print('error: the tests fail without any mutation; fix them first')
            return 1
        results, total = [], len(args.mutations)
        for index, mutation in enumerate(args.mutations, 1):
            started = time.monotonic()
            verdict, detail = check(mutation, args.python, copy, basetemp)
            results.append(verdict)
            print(f'[{index:>{len(str(total))}}/{total}] {verdict:<8} {mutation.name:<26} '
                  f'{time.monotonic() - started:5.0f} s  {mutation.defect}; {detail}', flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f'{len(results)} mutation(s): {results.count("killed")} killed, {results.count("SURVIVED")} survived, '
          f'{results.count("error")} error(s)')
    return 0 if all(verdict == 'killed' for verdict in results) else 1


if __name__ == '__main__':
    sys.exit(main())
