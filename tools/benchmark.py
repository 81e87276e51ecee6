"""Run every method on every dataset (train.py -> test.py -> crf.py) and write docs/RESULTS.md.

    python -m tools.benchmark --dataroot ../shared/datasets --methods cltnet,cam,otsu --args "--preset cpu"
    python -m tools.benchmark --dataroot ../shared/datasets --methods cltnet,cam,otsu --minutes 45 \\
        --args "--preset cpu"
    python -m tools.benchmark --dataroot ../shared/datasets --reuse --result_dir ../runs \\
        --methods cltnet,cam,otsu,cltnet_pipeline --names cltnet=stage1,cltnet_pipeline=isic \\
        --datasets ISIC --readme README.md   # runs trained separately, pipeline.py's release included
    python -m tools.benchmark --dataroot ../shared/datasets --datasets ISIC --methods cam,pcm,seam,psa,irn \\
        --args "--encoder efficientnet-lite0 --img_size 256" --method_train_args "psa=--batch_size 1"
    python -m tools.benchmark --speed --preset paper   # speed and memory instead (flags: see the end)

Each (dataset, method) is one ordinary run folder <result_dir>/<dataset>/<folder>/<name>/ (default
name: the method's). Each script runs as its own process with the command line a user would type
(workflow/run_script.py), so every run folder can be inspected and rerun on its own. With ``--reuse`` a
run's existing checkpoints are kept and test.py / crf.py rerun only when what they read or their command
changed since this tool ran them there (pipeline.py's rule, workflow/step_runner.py; recorded in
<run>/benchmark_steps.json, so they run once on a run this tool has not tested yet). Every number of
RESULTS.md and results.json is read from the run folders (summary.json, checkpoints) and every choice
from the stages' records (test/selection.json, records/record_io.py); the file is only ever written by this command.

The baselines pcm, seam, psa and irn train like cam (stage-1 runs, the same shared flags and --stage1_recipes);
psa and irn learn from a trained CAM: each gets the checkpoint test.py chose on val in the cam run of its dataset
(its test/selection.json; the run --names gives cam), so cam trains and is tested before them. Flags of one
method alone: --method_train_args "seam=--batch_size 4;BraTS/psa=--batch_size 1".

The method cltnet_pipeline is the released two-stage file as pipeline.py builds it; this tool never
trains or tests it, it reads the pipeline's record <name>/pipeline.json and its release run
<name>_release/ (test.py and crf.py with --weights on the two-stage file; testA scored there once).
cam_pipeline reads a pipeline whose stage 1 is the CAM classifier ([stage1] model = "cam") the same way;
each stops with one line when the pipeline's stage 1 is the other model. Run pipeline.py first: without
them the benchmark stops before anything runs, naming the command.
With ``--readme README.md`` a short headline table from the same rows goes between the README's
``<!-- results start -->`` and ``<!-- results end -->`` markers.
"""
import argparse
import os
import re
import shlex
import signal
import sys
import tempfile
import time

from data.image_io import write_json_atomic, write_text_atomic
from evaluation.metrics import SCORE_NAMES
from models import find_model_class
from models.cascade_model import split_architecture
from models.weights_file import read_state
from options.base_options import default_folder
from records.pipeline_record import PipelineRecord
from records.record_io import load_json, read_test_selection, require_record
from records.run_folder import (benchmark_steps_path, benchmark_timing_path, checkpoint_path, checkpoints_folder,
                                crf_record_path, list_checkpoints, pipeline_record_path, pipeline_run_name, run_in,
                                runs_folder, split_folder, stage_folder, summary_path, test_record_path)
from reporting.pipeline_report import replace_section
from tools import speed_benchmark
from util.machine import machine
from workflow.recipe import RecipeError, read_recipe, step_flags
from workflow.run_script import run_script
from workflow.step_runner import Step, StepRunner

PIPELINE = 'cltnet_pipeline'
# Read-only methods, each a finished pipeline.py run (its release) whose stage 1 is that localisation model:
# the paper's path (CLTNet) and the same stage 2 on the pretrained CAM classifier's maps.
PIPELINES = {PIPELINE: 'cltnet', 'cam_pipeline': 'cam'}
METHODS = ('cltnet', 'cam', 'pcm', 'seam', 'psa', 'irn', 'otsu', 'cltnet_stage2', 'cltnet_stage2_few', *PIPELINES)
STAGE1_METHODS = ('cltnet', 'cam', 'pcm', 'seam', 'psa', 'irn')  # trained from the weak labels alone, like stage 1
# The weakly supervised baselines of the paper's table (the README headline names the best of them).
CAM_FAMILY = tuple(method for method in STAGE1_METHODS if method != 'cltnet')
# The methods that learn from a trained CAM: method -> the train.py flag naming the cam run's checkpoint.
CAM_BASED = {'psa': '--psa_cam_weights', 'irn': '--irn_cam_weights'}
# Each method's name in the comparison table and the figure (the paper's names; "+crf" rows add "+CRF").
NAMES = {'cltnet': 'CLTNet stage 1', 'cam': 'CAM', 'pcm': 'PCM', 'seam': 'SEAM', 'psa': 'PSA', 'irn': 'IRN',
         'otsu': 'Otsu', 'cltnet_stage2': 'CLTNet stage 2', 'cltnet_stage2_few': 'CLTNet stage 2 + few labels',
         PIPELINE: 'CLTNet (released file)', 'cam_pipeline': 'CAM + U-Net (pipeline)'}
# Stage 2 (a U-Net on the cltnet run's pseudo-masks; "_few" adds the --few_sample labelled images):
# method -> its train.py flags beyond --stage 2 --pseudo <cltnet run>.
STAGE2 = {'cltnet_stage2': [], 'cltnet_stage2_few': ['--few_sample', '{few_sample}']}
# The steps of a pipeline (pipeline.json) that train: stage 1 (absent when it came from a file), each round.
PIPELINE_TRAINING = re.compile(r'stage1|r\d+_train')
# Literature constants, never measured here: the CLTNet paper's own figures (percent, testA), for orientation
# only: another setup (GPU, full budget, its own splits and post-processing, ResNet backbones). "CAM" and
# "CAM+CRF": the paper gives JA alone; the other methods' figures on these datasets are not sourced ("—").
PAPER_SOURCE = ('the CLTNet paper\'s comparison table, as entered with this benchmark (commit 45a2b02); '
                'its DI (ISIC 88.9, BraTS 87.3) and CAM\'s ISIC JA (68.1) are also quoted in issue 43')
PAPER = {'BraTS': {'CLTNet': dict(JA=79.0, DI=87.3, AC=99.2, SE=88.6, SP=99.6),
                   'CAM': dict(JA=38.0), 'CAM+CRF': dict(JA=63.6)},
         'ISIC': {'CLTNet': dict(JA=81.8, DI=88.9, AC=95.4, SE=86.3, SP=98.6),
                  'CAM': dict(JA=68.1), 'CAM+CRF': dict(JA=70.9)}}
LITE0 = 'efficientnet-lite0'  # the ImageNet-pretrained backbone every method can use (models/backbone.py)
# Which table row stands beside which of the paper's rows: its CLTNet is the complete method (both stages, CRF).
PAPER_ROW = {'cam': 'CAM', 'cam+crf': 'CAM+CRF', 'pcm': 'PCM', 'pcm+crf': 'PCM+CRF', 'psa': 'PSA', 'seam': 'SEAM',
             'irn': 'IRN', PIPELINE + '+crf': 'CLTNet'}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag defaults shown, and the module docstring (with its examples) kept as written."""


def build_parser():
    speed_help = speed_benchmark.build_parser(prog='python -m tools.benchmark --speed').format_help()
    parser = argparse.ArgumentParser(prog='python -m tools.benchmark', description=__doc__,
                                     formatter_class=_HelpFormatter,
                                     epilog='With --speed, tools/speed_benchmark.py runs instead:\n\n' + speed_help)
    parser.add_argument('--speed', action='store_true',
                        help='measure training / inference / CRF speed and peak memory instead of results '
                             '(tools/speed_benchmark.py); every other flag is then one of its flags, listed at '
                             'the end')
    parser.add_argument('--dataroot', default='./dataset', help='folder holding <dataset>/<folder>/ (as train.py)')
    parser.add_argument('--datasets', default='ISIC,BraTS',
                        help='comma-separated datasets under --dataroot; each uses its default folder '
                             '(ISIC: isic_1, BraTS: brats_1, other: <name>_1)')
    parser.add_argument('--methods', default=','.join(METHODS),
                        help='comma-separated methods: cltnet, cam, pcm, seam, psa, irn, otsu '
                             '(models/<method>_model.py; psa and irn train on the CAM test.py chose in the cam '
                             'run, so cam, when listed, goes before them), '
                             'cltnet_stage2 (a U-Net trained on the cltnet run\'s pseudo-masks, pseudo.py), '
                             'cltnet_stage2_few (the same plus the --few_sample labelled images) and '
                             'cltnet_pipeline (the release of a finished pipeline.py run of that --names name, '
                             'read, never trained or tested here) and cam_pipeline (the same for a pipeline whose '
                             'stage 1 is the CAM classifier, [stage1] model = "cam"); the stage-2 methods need '
                             'cltnet in the list before them')
    parser.add_argument('--few_sample', default='stage2_50',
                        help='few-shot folder (few_sample/<NAME>) of the cltnet_stage2_few method')
    parser.add_argument('--crf', default='cltnet,cam,pcm,seam,psa,irn,cltnet_stage2,cltnet_stage2_few,cltnet_pipeline,'
                                         'cam_pipeline',
                        help='comma-separated methods whose maps also go through crf.py (their "+crf" rows; '
                             'cltnet_pipeline, cam_pipeline: the pipeline\'s own crf.py outputs)')
    parser.add_argument('--result_dir', default='results', help='root of the run folders (as train.py)')
    parser.add_argument('--names', default='',
                        help='run name per method as METHOD=NAME pairs, e.g. "cltnet=cpu1200", or per dataset '
                             'and method as DATASET/METHOD=NAME (wins over METHOD=NAME), e.g. '
                             '"ISIC/cltnet_stage2=r3"; default: the method name')
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument('--iteration', default=None,
                        help='training steps: one number for every trained method, or METHOD=N pairs '
                             '("cltnet=3000,cam=3000"); default: the preset\'s')
    budget.add_argument('--minutes', type=float, default=None,
                        help='training budget per method and dataset in minutes: a short timing probe sets '
                             '--iteration to fill about 95%% of it, and train.py is stopped (SIGINT: it saves '
                             'and the run is reported incomplete) if the budget still runs out')
    parser.add_argument('--probe_steps', type=int, default=10,
                        help='--minutes: steps the timing probe measures (after 2 warm-up steps)')
    parser.add_argument('--reuse', action='store_true',
                        help='keep the runs that already have checkpoints (trained separately or earlier) '
                             'instead of refusing to overwrite them; rerun test.py / crf.py only when stale')
    parser.add_argument('--args', default='',
                        help='extra flags given to train.py, test.py and crf.py alike (one shell string), '
                             'e.g. "--preset cpu --num_threads 2 --num_workers 1"')
    parser.add_argument('--train_args', default='', help='extra flags for train.py only, e.g. "--save_freq 250"')
    parser.add_argument('--method_train_args', default='', metavar='[DATASET/]METHOD=FLAGS;...',
                        help='extra train.py flags of one method (on one dataset with DATASET/), pairs separated '
                             'by ";", e.g. "seam=--batch_size 4;psa=--batch_size 1 --psa_beta 8;BraTS/irn=--lr '
                             '1e-4"; they come after --train_args, and DATASET/METHOD\'s after METHOD\'s, so the '
                             'most specific wins; psa/irn: a --psa_cam_weights / --irn_cam_weights given here '
                             'replaces the cam run\'s chosen checkpoint')
    parser.add_argument('--select_few', default='', metavar='DATASET=NAME,...',
                        help='test.py of that dataset chooses on val plus the held-out few-shot folder '
                             'few_sample/NAME (test.py --select_few), as a recipe with select_few chooses the '
                             'released file, e.g. "BraTS=stage2_50"; default: val alone')
    parser.add_argument('--stage1_recipes', default=None, metavar='DIR',
                        help='train the stage-1 methods (cltnet, cam, pcm, seam, psa, irn) with the [common] and '
                             '[stage1] flags of DIR/<dataset>.toml (e.g. recipes), so a baseline gets the released '
                             'stage 1\'s schedule and augmentation; --args, --train_args and --method_train_args '
                             'come after them and win')
    parser.add_argument('--out_dir', default='docs', help='where RESULTS.md and results.json are written')
    parser.add_argument('--readme', default=None, metavar='PATH',
                        help='also write a short headline table (released file, stage 1, Otsu, paper) between '
                             'the <!-- results start --> and <!-- results end --> markers of this existing file '
                             '(appended when it has none), e.g. README.md; default: none')
    return parser


def method_pairs(text, flag, parser, per_dataset=False, sep=','):
    """'a=1,b=2' -> {'a': '1', 'b': '2'} (items split at ``sep``; errors name ``flag``); ``per_dataset`` also
    takes 'DATASET/METHOD=VALUE' keys."""
    def valid(key):
        method = key.rpartition('/')[2] if per_dataset else key
        return method in METHODS and not key.startswith('/')
    form = '[DATASET/]METHOD=VALUE' if per_dataset else 'METHOD=VALUE'
    return _pairs(text, flag, parser, valid, f'{form} pairs with METHOD in {", ".join(METHODS)}', sep)


def dataset_pairs(text, datasets, parser):
    """--select_few's 'BraTS=stage2_50,...' -> {'BraTS': 'stage2_50'}; every DATASET one of ``datasets``."""
    return _pairs(text, '--select_few', parser, lambda key: key in datasets,
                  f'DATASET=NAME pairs with DATASET in --datasets ({", ".join(datasets)})')


def _pairs(text, flag, parser, valid, expected, sep=','):
    """KEY=VALUE items of ``text`` split at ``sep`` -> {KEY: VALUE}; an item without a value or whose key is
    not ``valid`` stops the parse with one line naming ``flag`` and the ``expected`` form."""
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(sep))):
        key, equals, value = item.partition('=')
        if not equals or not value or not valid(key):
            parser.error(f'{flag}: expected {expected}, got {item!r}')
        pairs[key] = value
    return pairs


def parse(argv):
    parser = build_parser()
    opt = parser.parse_args(argv)
    opt.argv = list(argv)
    opt.datasets = [d for d in (s.strip() for s in opt.datasets.split(',')) if d]
    opt.methods = [m for m in (s.strip() for s in opt.methods.split(',')) if m]
    opt.crf = [m for m in (s.strip() for s in opt.crf.split(',')) if m]
    if not opt.datasets or not opt.methods:
        parser.error('--datasets and --methods need at least one entry each')
    for method in opt.methods:
        if method in STAGE2:
            if 'cltnet' not in opt.methods[:opt.methods.index(method)]:
                parser.error(f'--methods: {method} trains on the pseudo-masks of the cltnet run; list cltnet before it')
        elif method in PIPELINES:
            pass  # built by pipeline.py: nothing of it runs here
        elif method in CAM_BASED and 'cam' in opt.methods[opt.methods.index(method):]:
            parser.error(f'--methods: {method} trains on the CAM test.py chose in the cam run; list cam before it')
        elif method in METHODS:
            find_model_class(method)
        else:
            parser.error(f'--methods: unknown method {method!r}; choose from {", ".join(METHODS)}')
    opt.names = method_pairs(opt.names, '--names', parser, per_dataset=True)
    opt.select_few = dataset_pairs(opt.select_few, opt.datasets, parser)
    opt.method_train_args = method_pairs(opt.method_train_args, '--method_train_args', parser, per_dataset=True,
                                         sep=';')
    for key, flags in opt.method_train_args.items():
        try:
            opt.method_train_args[key] = shlex.split(flags)
        except ValueError as error:
            parser.error(f'--method_train_args: {key}={flags!r}: {error}')
    if opt.iteration is None or '=' in opt.iteration:
        opt.iteration = method_pairs(opt.iteration or '', '--iteration', parser)
    elif opt.iteration.isdigit() and int(opt.iteration) > 0:
        opt.iteration = {method: opt.iteration for method in opt.methods}
    else:
        parser.error(f'--iteration: expected a positive number or METHOD=N pairs, got {opt.iteration!r}')
    if opt.minutes is not None and opt.minutes <= 0:
        parser.error(f'--minutes must be positive, got {opt.minutes}')
    if opt.probe_steps < 1:
        parser.error(f'--probe_steps must be at least 1, got {opt.probe_steps}')
    if opt.readme is not None and not os.path.isfile(opt.readme):
        parser.error(f'--readme: {opt.readme} not found (the section goes into an existing file)')
    return opt


def stage1_recipe_flags(opt, dataset):
    """The [common] + [stage1] words of --stage1_recipes' recipe for ``dataset`` (none without the flag)."""
    if not opt.stage1_recipes:
        return []
    try:
        return step_flags(read_recipe(os.path.join(opt.stage1_recipes, f'{dataset}.toml')), 'stage1')
    except RecipeError as error:
        raise SystemExit(f'error: --stage1_recipes: {error}') from None


def run_name(names, dataset, method):
    """--names' run name of ``method`` on ``dataset``: DATASET/METHOD, else METHOD, else the method name."""
    return names.get(f'{dataset}/{method}', names.get(method, method))


def method_train_flags(pairs, dataset, method):
    """--method_train_args' train.py flags of ``method`` on ``dataset``: METHOD's, then DATASET/METHOD's."""
    return [*pairs.get(method, []), *pairs.get(f'{dataset}/{method}', [])]


def chosen_cam_checkpoint(run):
    """The checkpoint test.py chose on val in the cam run that ``run`` (psa or irn) learns from; exits with one
    line when that run is missing or not yet tested, or the chosen file is gone."""
    record = test_record_path(run.cam_source)
    fix = (f'train and test the cam run first (list cam before {run.method} in --methods), or name a tested cam '
           f'run with --names {run.dataset}/cam=NAME')
    if not os.path.isfile(record):
        raise SystemExit(f'error: {run.label()} trains on the CAM test.py chose in {run.cam_source}, but '
                         f'{record} is not there: {fix}')
    selection = read_test_selection(record, fix)
    step = selection.get('step')
    path = checkpoint_path(run.cam_source, step) if step is not None else selection['checkpoint']
    if not path or not os.path.isfile(path):
        raise SystemExit(f'error: {record} chose the checkpoint {path}, which is not there: run test.py on '
                         f'{run.cam_source} again')
    return path


def pipeline_command(opt, dataset, name, method=PIPELINE):
    """The pipeline.py command that builds pipeline ``name`` where this tool looks for it (with the
    dataset's recipe when the repository has one and the method is its path, cltnet_pipeline)."""
    recipe = os.path.join('recipes', f'{dataset}.toml')
    if method != PIPELINE or not os.path.isfile(os.path.join(ROOT, recipe)):
        recipe = 'RECIPE.toml'
    return 'python ' + shlex.join(['pipeline.py', '--dataroot', opt.dataroot, '--dataset', dataset,
                                   '--recipe', recipe, '--name', name, '--result_dir', opt.result_dir])


class Run:
    """One (dataset, method): its run folder and the argument lists of the three scripts. A pipeline
    (cltnet_pipeline, cam_pipeline) is read only: its folder is the release run <name>_release/, its record
    <name>/pipeline.json."""

    def __init__(self, opt, dataset, method):
        self.dataset, self.method = dataset, method
        self.folder = default_folder(dataset)
        self.name = run_name(opt.names, dataset, method)
        self.root = runs_folder(opt.result_dir, dataset, self.folder)
        self.pipeline = method in PIPELINES
        self.dir = run_in(self.root, pipeline_run_name(self.name, 'release') if self.pipeline else self.name)
        self.record = pipeline_record_path(run_in(self.root, self.name)) if self.pipeline else None
        self.command = pipeline_command(opt, dataset, self.name, method) if self.pipeline else None
        model = 'cascade' if self.pipeline else 'seg' if method in STAGE2 else method
        self.trained = not self.pipeline and getattr(find_model_class(model), 'needs_checkpoint', True)
        base = ['--dataroot', opt.dataroot, '--dataset', dataset, '--folder', self.folder,
                '--result_dir', opt.result_dir, '--name', self.name, '--model', model]
        self.argv = base + shlex.split(opt.args)
        self.test_argv = self.argv + (['--select_few', opt.select_few[dataset]] if dataset in opt.select_few else [])
        recipe = stage1_recipe_flags(opt, dataset) if method in STAGE1_METHODS else []
        self.train_argv = base + recipe + shlex.split(opt.args) + ['--display_id', '0', *shlex.split(opt.train_args)]
        self.train_argv += method_train_flags(opt.method_train_args, dataset, method)
        self.cam_flag = CAM_BASED.get(method)
        self.cam_source = run_in(self.root, run_name(opt.names, dataset, 'cam')) if self.cam_flag else None
        self.pseudo_source = None
        if method in STAGE2:
            self.pseudo_source = run_name(opt.names, dataset, 'cltnet')
            self.train_argv += ['--stage', '2', '--pseudo', self.pseudo_source,
                                *(flag.format(few_sample=opt.few_sample) for flag in STAGE2[method])]

    def label(self):
        return f'{self.dataset}/{self.method}'


def _call(run, argv, ok_codes=(0,), deadline=None):
    """Run ``argv`` (train.py / test.py / crf.py / pseudo.py and its flags) for ``run`` in its own process;
    returns its exit code. Any code outside ``ok_codes`` stops the benchmark, saying where."""
    print(f'[{run.label()}] python {shlex.join(map(str, argv))}', flush=True)
    code = run_script(argv, deadline)
    if code not in ok_codes:
        raise SystemExit(f'benchmark: {argv[0]} for {run.label()} stopped ({code}); the run folder is {run.dir}')
    return code


def _timed_train(run, argv, deadline=None):
    """(seconds, stopped): train.py's wall time (its start-up included), and whether ``deadline`` seconds
    ran out first. At the deadline train.py gets SIGINT, on which it saves a checkpoint at the current
    step and stops."""
    started = time.perf_counter()
    code = _call(run, ['train.py', *argv], ok_codes=(0, 128 + signal.SIGINT) if deadline else (0,),
                 deadline=deadline)
    return time.perf_counter() - started, code != 0


def probe_iterations(run, minutes, probe_steps):
    """(steps, seconds per step): the steps that fit in ``minutes``, from two throw-away runs of 2 and
    2 + probe_steps steps (their difference is the time per step, the rest is start-up)."""
    with tempfile.TemporaryDirectory(prefix='benchmark_probe_') as scratch:
        def probe(steps):
            return _timed_train(run, run.train_argv + ['--result_dir', scratch, '--name', f'probe{steps}',
                                                       '--iteration', str(steps), '--save_freq', str(steps)])[0]
        short, long = probe(2), probe(2 + probe_steps)
    per_step = (long - short) / probe_steps
    safe = long / (2 + probe_steps)  # start-up counted as steps: never too many steps
    if per_step < 0.1 * safe:  # timing noise swamped the difference (very short steps)
        per_step = safe
    startup = max(short - 2 * per_step, 0.0)
    steps = max(1, int((0.95 * minutes * 60 - startup) / per_step))
    print(f'[{run.label()}] probe: {per_step:.3f} s/step, {startup:.1f} s start-up -> --iteration {steps}')
    return steps, per_step


def train_run(run, opt):
    """Train unless the run has checkpoints (kept with --reuse, refused without)."""
    if not run.trained:
        return
    if list_checkpoints(run.dir):
        if not opt.reuse:
            raise SystemExit(f'error: {run.dir} already holds checkpoints; pass --reuse to use them, or choose '
                             f'another --result_dir or --names {run.method}=NEW_NAME')
        print(f'[{run.label()}] reusing the checkpoints in {checkpoints_folder(run.dir)}')
        return
    if run.cam_flag and run.cam_flag not in run.train_argv:
        run.train_argv = run.train_argv + [run.cam_flag, chosen_cam_checkpoint(run)]
    argv, record, deadline = list(run.train_argv), {}, None
    if opt.minutes is not None:
        steps, per_step = probe_iterations(run, opt.minutes, opt.probe_steps)
        argv += ['--iteration', str(steps)]
        deadline = opt.minutes * 60
        record.update(budget_minutes=opt.minutes, probe_seconds_per_step=per_step)
    elif run.method in opt.iteration:
        argv += ['--iteration', opt.iteration[run.method]]
    seconds, stopped = _timed_train(run, argv, deadline)
    if stopped:
        print(f'[{run.label()}] the {opt.minutes} min budget ran out before the last step; '
              f'the run is marked incomplete')
        record['stopped_at_budget'] = True
    write_json_atomic(benchmark_timing_path(run.dir),
                      {'train_seconds': seconds, 'command': 'train.py ' + shlex.join(argv), **record})


class RunSteps(StepRunner):
    """The steps this tool runs on the run folder of ``source`` (a Run) for ``run`` (whose label they print),
    by pipeline.py's freshness rule. Their record, <run>/benchmark_steps.json, names paths relative to the run
    folder and leaves --result_dir out of the commands: a run folder copied or moved with it stays up to date."""

    def __init__(self, run, source, rerun=False):
        super().__init__(PipelineRecord(benchmark_steps_path(source.dir), base=source.dir),
                         lambda argv: _call(run, argv))
        self.run, self.source = run, source
        self.redo = rerun  # every step runs, and is recorded

    def recorded_argv(self, step):
        argv = list(step.argv)
        where = argv.index('--result_dir')
        return argv[:where] + argv[where + 2:]

    def skipped(self, step, done):
        what = 'the pseudo-masks' if step.name == 'pseudo' else f'{step.argv[0]} outputs'
        print(f'[{self.run.label()}] reusing {what} in {stage_folder(self.source.dir, step.name)}')

    def starting(self, step, resume):
        pass  # _call prints the command

    def step(self, name, script, inputs):
        """Step ``name``: ``script`` on the source run, reading ``inputs``, writing <run>/<name>/."""
        argv = self.source.test_argv if script == 'test.py' else self.source.argv
        return Step(name, [script, *argv], inputs, outputs=[stage_folder(self.source.dir, name)])


def make_pseudo_masks(run, source, opt):
    """pseudo.py on the stage-1 run ``source`` (a Run), unless its pseudo-masks are up to date with its
    checkpoints and the test.py and crf.py records they follow."""
    steps = RunSteps(run, source)
    steps.execute(steps.step('pseudo', 'pseudo.py', [checkpoints_folder(source.dir),
                                                     test_record_path(source.dir), crf_record_path(source.dir)]))


def _summary_path(run, stage, split):
    return summary_path(split_folder(run.dir, stage, split))


def _stage_outputs(run, stage):
    """What test.py or crf.py (``stage``) leaves in the run folder: its record and its testA / testB
    summaries."""
    record = {'test': test_record_path, 'crf': crf_record_path}[stage](run.dir)
    return [record] + [_summary_path(run, stage, split) for split in ('testA', 'testB')]


def test_and_refine(run, opt):
    """test.py, then crf.py for the methods in --crf; with --reuse only what is not up to date."""
    steps = RunSteps(run, run, rerun=not opt.reuse)
    steps.execute(steps.step('test', 'test.py', [checkpoints_folder(run.dir)]))
    if run.method in opt.crf:
        steps.execute(steps.step('crf', 'crf.py', [stage_folder(run.dir, 'test')]))


def read_pipeline(run, opt):
    """The record (pipeline.json) of the pipeline ``run`` reads, once the pipeline has finished and its
    release run holds what the rows read; otherwise exit with one line naming the pipeline.py command."""
    stages = ('test', 'crf') if run.method in opt.crf else ('test',)
    needed = [run.record] + [path for stage in stages for path in _stage_outputs(run, stage)]
    missing = next((path for path in needed if not os.path.isfile(path)), None)
    if missing:
        raise SystemExit(f'error: {missing} not found: run the pipeline first: {run.command}')
    record = load_json(run.record)
    unfinished = next((name for name, step in record['steps'].items() if step.get('status') != 'done'), None)
    if unfinished or 'choose' not in record:
        what = f'step {unfinished} has not finished' if unfinished else 'no round chosen yet'
        raise SystemExit(f'error: {run.record}: {what}: run the pipeline to its end: {run.command}')
    stage1 = _served_stage1(record['steps'])
    expected = PIPELINES[run.method]
    if stage1 and stage1['model'] != expected:
        other = next(method for method, model in PIPELINES.items() if model == stage1['model'])
        raise SystemExit(f"error: pipeline {run.name}'s stage 1 is --model {stage1['model']}, not {run.method}'s "
                         f'{expected}: name it with --names {run.dataset}/{other}={run.name}')
    return record


def _flag(argv, flag):
    """The word after ``flag`` in ``argv``, or None."""
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def training_record(run):
    """{'seconds', 'step', 'planned', 'setting'} of a trained run, from its newest checkpoint
    (``train_seconds`` when train.py stored it) or this tool's own timing file; None if training-free.
    A pipeline's: pipeline_training."""
    if run.pipeline:
        return pipeline_training(run)
    if not run.trained:
        return None
    return _checkpoint_training(run.dir)


def pipeline_training(run):
    """{'seconds', 'note', 'step', 'planned', 'setting'} of a pipeline: the seconds of its training steps
    (stage 1 when it trained it, every round's train.py), noting a stage 1 that came from a file; the
    steps and setting of the round it chose (pipeline.json 'choose'), from that round's checkpoints."""
    record = load_json(run.record)
    steps, choice = record['steps'], record['choose']
    chosen = run_in(run.root, choice['chosen'])
    if not list_checkpoints(chosen):
        raise SystemExit(f'error: no checkpoints in {chosen}, the round pipeline {run.name} chose: run the '
                         f'pipeline again: {run.command}')
    training = _checkpoint_training(chosen)
    training['seconds'] = sum(step['seconds'] for name, step in steps.items() if PIPELINE_TRAINING.fullmatch(name))
    training['note'] = None if 'stage1' in steps else \
        f"stage 2 only: stage 1 from {_flag(steps['stage1_test']['argv'], '--weights')}"
    training['setting'] += f"; round {choice['chosen']} of {len(choice['ranking'])}, by {choice['rule']}"
    parts = ((_stage1_backbone(steps), 'stage 1'), (training['backbone'], 'stage-2 U-Net'))
    training['backbone'] = ', '.join(f'{encoder} ({stage})' for encoder, stage in parts if encoder) or None
    return training


def _served_stage1(steps):
    """The stage-1 architecture of the two-stage file a pipeline's release step served (its architecture holds
    both stages'), or None when the record names no such file or it is gone."""
    served = _flag(steps.get('release_test', {}).get('argv', []), '--weights')
    if not served or not os.path.isfile(served):
        return None
    return split_architecture(read_state(served)['architecture'])[0]


def _stage1_backbone(steps):
    """The stage-1 encoder of the two-stage file a pipeline's release step served, or None (_served_stage1)."""
    stage1 = _served_stage1(steps)
    return backbone({'architecture': stage1}) if stage1 else None


def _checkpoint_training(run_dir):
    """{'seconds', 'step', 'planned', 'setting'} from the newest checkpoint of ``run_dir``."""
    state = read_state(list_checkpoints(run_dir)[-1][1])
    options = state.get('options', {})
    seconds = state.get('train_seconds')
    timing = benchmark_timing_path(run_dir)
    if seconds is None and os.path.isfile(timing):
        seconds = load_json(timing)['train_seconds']
    return {'seconds': seconds, 'step': state.get('step'), 'planned': options.get('iteration'),
            'backbone': backbone(state),
            'setting': f"{options.get('img_size')} px, ch {options.get('ch')}, batch {options.get('batch_size')}"
                       + (f", jitter {options['jitter']}" if options.get('jitter', 0.1) != 0.1 else '')
                       + (f", pseudo-masks of {options['pseudo']}" if options.get('stage') == 2 else '')
                       + (f", chosen on val + few_sample/{options['select_few']} (held out of training)"
                          if options.get('select_few') else '')}


def backbone(state):
    """The encoder a checkpoint's networks were built on, from its architecture: 'efficientnet-lite0', 'scratch'
    (an optional encoder left at its default), or None for a model that has no encoder to choose."""
    architecture = state.get('architecture', {})
    model = architecture.get('model')
    default = find_model_class(model).optional_architecture.get('encoder') if model else None
    return architecture.get('encoder', default)


def collect(run, opt):
    """Table rows ({'method', 'run', 'scores', 'fp_rate', 'auc', 'training', 'chosen_step', 'images_per_second',
    'file'}) of one run: the method itself and, when refined, its +crf row. A pipeline's come from its
    release run; 'file' is the weights file it released (None for other methods)."""
    record = read_pipeline(run, opt) if run.pipeline else None
    released = _flag(record['steps'].get('release_export', {}).get('argv', []), '--out') if record else None
    test_a, test_b = (load_json(_summary_path(run, 'test', s)) for s in ('testA', 'testB'))
    chosen = require_record(test_record_path(run.dir), f'run test.py for {run.label()} first')['selection']
    training = training_record(run)
    if training and chosen.get('select_few') and 'few_sample/' not in training['setting']:
        training['setting'] += f", chosen on {chosen['chosen_on']}"  # a stage-1 method tested with --select_few
    rows = [{'method': run.method, 'run': run.name, 'scores': {k: test_a[k] for k in SCORE_NAMES},
             'fp_rate': test_b['fp_rate'],
             'auc': test_a.get('auc'), 'training': training, 'chosen_step': chosen.get('step'),
             'map_mode': chosen['map_mode'], 'images_per_second': test_a['images_per_second'], 'file': released}]
    if run.method in opt.crf:
        crf_a, crf_b = (load_json(_summary_path(run, 'crf', s)) for s in ('testA', 'testB'))
        rows.append({'method': run.method + '+crf', 'run': run.name, 'scores': {k: crf_a[k] for k in SCORE_NAMES},
                     'fp_rate': crf_b['fp_rate'], 'auc': None, 'training': training,
                     'chosen_step': rows[0]['chosen_step'], 'map_mode': rows[0]['map_mode'],
                     'images_per_second': crf_a['images_per_second'], 'file': released})
    return rows


def _num(value, digits=3):
    return '—' if value is None else f'{value:.{digits}f}'


def _duration(seconds):
    if seconds is None:
        return 'not recorded'
    return f'{seconds:.1f} s' if seconds < 120 else f'{seconds / 60:.1f} min' if seconds < 7200 else \
        f'{seconds / 3600:.1f} h'


def _training_cells(row):
    training = row['training']
    if training is None:
        return ['training-free', '—', '—']
    steps = f"{training['step']}"
    if training['planned'] and training['step'] != training['planned']:
        steps += f" of {training['planned']} (incomplete)"
    seconds = _duration(training['seconds']) + (f" ({training['note']})" if training.get('note') else '')
    return [seconds, f"{steps} (chosen: {row['chosen_step']})", training['setting']]


def verdict(rows):
    """One generated line: is the best weakly supervised CLTNet row (stage 1, stage 2 or the pipeline's
    release) ahead of every baseline row on DI, and, when a pipeline is in the table and another row is
    best, is the released file?"""
    # Weak labels only on both sides: the few-shot rows also learn from labelled masks (a pipeline that
    # chooses on held-out few-shot images does not train on them).
    weak = [r for r in rows if '_few' not in r['method']]
    ours = [r for r in weak if r['method'].startswith('cltnet')]
    others = [r for r in weak if not r['method'].startswith('cltnet')]
    if not ours or not others:
        return ''

    def best_of(group):
        return max(group, key=lambda r: r['scores']['DI'])

    def ahead(row):
        return 'ahead' if row['scores']['DI'] > rival['scores']['DI'] else 'NOT ahead'
    best, rival = best_of(ours), best_of(others)
    line = (f"DI: best CLTNet row {best['method']} {best['scores']['DI']:.3f} vs best baseline row "
            f"{rival['method']} {rival['scores']['DI']:.3f}: CLTNet is {ahead(best)}.")
    released = [r for r in ours if r['method'].startswith(PIPELINE)]
    if released and best not in released:
        top = best_of(released)
        line += f" The released file ({top['method']} {top['scores']['DI']:.3f}) is {ahead(top)}."
    return line


def _command(opt):
    return 'python -m tools.benchmark ' + shlex.join(opt.argv)


def _row_name(method):
    """A row's name in the comparison table: the method's (NAMES), "+CRF" after crf.py."""
    base, refined = (method[:-4], True) if method.endswith('+crf') else (method, False)
    return NAMES.get(base, base) + ('+CRF' if refined else '')


def _paper_cell(dataset, method):
    """The paper's JA / DI / AC / SE / SP (in [0, 1]) for the row ``method`` stands beside (PAPER_ROW), '—'
    for each figure it does not give; a single '—' for a row with no paper row."""
    figures = PAPER.get(dataset, {}).get(PAPER_ROW.get(method))
    if not figures:
        return '—'
    return ' / '.join(_num(None if figures.get(k) is None else figures[k] / 100) for k in SCORE_NAMES)


def _minutes(training):
    if training is None:
        return 'training-free'
    if training['seconds'] is None:
        return 'not recorded'
    # A pipeline that started from a stage-1 file counts stage 2 alone: the cell says so.
    return f"{training['seconds'] / 60:.1f}" + (' (stage 2 only)' if training.get('note') else '')


def backbone_note(rows):
    """One line: which methods ran on the ImageNet-pretrained EfficientNet-Lite0, which did not (read from
    each run's checkpoint), and the papers' backbones."""
    groups = {}
    for row in rows:
        if not row['method'].endswith('+crf'):
            training = row['training']
            key = 'training-free' if training is None else training.get('backbone') or 'own'
            groups.setdefault(key, []).append(_row_name(row['method']))
    text = {LITE0: 'on the same ImageNet-pretrained EfficientNet-Lite0 (`--encoder efficientnet-lite0`, '
                   'models/backbone.py)',
            'scratch': 'on an encoder trained from scratch (`--encoder scratch`)',
            'own': 'on a network of their own (no encoder to choose)', 'training-free': 'without training'}
    parts = [f"{', '.join(names)}: {text.get(key, f'on {key}')}" for key, names in groups.items()]
    return ('Backbone, read from each run\'s checkpoint: ' + '; '.join(parts) + '. The papers used ImageNet '
            'ResNet-38/50 backbones, which cannot be installed here, so these rows compare the methods on one '
            'backbone, not the papers\' setups.')


def comparison(tables):
    """The RESULTS.md section laid out as the paper's table: per dataset a row per method and "+CRF" row, its
    measured testA scores, testB false lesions, image AUC and training minutes, and the paper's figures beside
    them (PAPER, never in a measured cell)."""
    lines = ['## The comparison table, laid out as the paper\'s', '',
             'A row per method and its "+CRF" row (crf.py on that method\'s maps). JA, DI, AC, SE, SP: testA, '
             'scored once by test.py or crf.py with the rules chosen on val, in [0, 1]. testB false lesions: the '
             'share of the normal testB images given any lesion pixel. Image AUC: test.py\'s image-level lesion '
             'score, testA vs testB (— where the method has none). Training: minutes of train.py, as the run '
             'recorded them (a pipeline: its training steps; "stage 2 only" when it started from a stage-1 file, whose '
             'training is not counted). Paper: the CLTNet paper\'s figures for the same '
             f'row (JA / DI / AC / SE / SP, as fractions) for orientation only, from another setup; source: '
             f'{PAPER_SOURCE}; — where it gives none or none is sourced here. The paper\'s CLTNet stands beside '
             'the released file after the CRF. Every row, its run and setting: the per-dataset tables below.', '']
    header = ('| method | JA | DI | AC | SE | SP | testB false lesions | image AUC | training (min) | backbone '
              '| paper: JA / DI / AC / SE / SP |')
    for dataset, rows in tables.items():
        lines += [f'### {dataset} (testA)', '', header, '|' + '---|' * 11]
        for row in rows:
            cells = [_row_name(row['method'])] + [_num(row['scores'][k]) for k in SCORE_NAMES]
            cells += [_num(row['fp_rate']), _num(row['auc']), _minutes(row['training']),
                      (row['training'] or {}).get('backbone') or '—', _paper_cell(dataset, row['method'])]
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines += ['', backbone_note(rows), '']
    return lines


def render(tables, opt, started, finished):
    """RESULTS.md text from {dataset: rows}."""
    lines = ['# Results', '',
             'Written by `tools/benchmark.py`; do not edit by hand. Every number below is read from the run '
             'folders (`test/<split>/summary.json`, `crf/<split>/summary.json`, checkpoints, a pipeline\'s '
             '`pipeline.json`), every choice from test.py\'s record (`test/selection.json`).', '',
             f'- command: `{_command(opt)}`', f'- machine: {machine()}',
             f'- written: {time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finished))} '
             f'(this command took {_duration(finished - started)})',
             f'- runs: `{opt.result_dir}/<dataset>/<folder>/<name>/` (a pipeline\'s: its record '
             '`<name>/pipeline.json`, its release run `<name>_release/`)', '',
             'The rows: **cltnet** is a stage-1 run (train.py, then test.py); **cltnet_stage2** a U-Net trained on '
             'the pseudo-masks of the cltnet run (pseudo.py, then train.py --stage 2), **cltnet_stage2_few** the '
             'same with the --few_sample labelled images in its training; this command trains and tests these '
             '(or reuses them with --reuse). **cltnet_pipeline** is the released two-stage file as `pipeline.py` '
             'builds it from a recipe (`recipes/<dataset>.toml`), and **cam_pipeline** a pipeline of the same '
             'steps whose stage 1 is the CAM classifier (`[stage1] model = "cam"`, its maps making the stage-2 '
             'pseudo-masks): this command only reads them. A pipeline\'s scores are its release run\'s (test.py '
             'and crf.py with --weights on the two-stage file; testA scored there once), its training time the sum '
             'of its training steps in `pipeline.json` (stage 1 when the pipeline trained it, then every round\'s '
             'train.py; "stage 2 only: stage 1 from FILE" when the recipe started from a released stage-1 file, '
             'whose training is not counted), its iterations and setting those of the round the pipeline chose, '
             'its chosen step the release test record\'s. The baselines: **cam**, '
             'the class activation map of an image classifier trained on the same weak labels '
             '(models/cam_model.py); **pcm** and **seam**, the CAM refined by pixel correlations and SEAM\'s '
             'siamese equivariant CAM (models/pcm_model.py, models/seam_model.py); **psa** and **irn**, '
             'AffinityNet\'s and IRN\'s random walks on the CAM that test.py chose in the cam run '
             '(models/psa_model.py, models/irn_model.py); and **otsu**, a training-free Otsu threshold of the '
             'image intensity (models/otsu_model.py). "+crf": the same masks refined by crf.py.', '',
             'JA, DI, AC, SE, SP: testA, mean over images, in [0, 1]; masks made by the rule chosen on val '
             '(checkpoint, map, threshold, post-processing; CRF parameters for "+crf"), or on val plus the '
             'held-out few-shot images where the setting says so (--select_few). testB FP rate: fraction '
             'of the normal testB images given any lesion pixel. AUC: image-level lesion score, testA vs testB '
             '(— where the method has no score). Training time and images/s were measured where and when each '
             'run ran (reused runs and pipelines: by that run); images/s is test.py\'s inference on testA, or '
             'crf.py\'s for "+crf" rows. The DI line under each table compares the best CLTNet row (stage 1, '
             'stage 2 or the pipeline; not the few-shot rows, which learn from labelled masks) with the best '
             'baseline row.', '']
    lines += comparison(tables)
    header = ('| method | run | JA | DI | AC | SE | SP | testB FP rate | AUC | training time | iterations | setting '
              '| map | images/s |')
    for dataset, rows in tables.items():
        lines += [f'## {dataset}', '', header, '|' + '---|' * 14]
        for row in rows:
            cells = [row['method'], row['run']] + [_num(row['scores'][k]) for k in SCORE_NAMES]
            cells += [_num(row['fp_rate']), _num(row['auc'])] + _training_cells(row)
            cells += [row['map_mode'], _num(row['images_per_second'], 1)]
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines += ['', verdict(rows), ''] if verdict(rows) else ['']
    lines += ['## Reported in the paper (a different setup)', '',
              'The paper\'s own figures, in percent, for orientation only: its GPU training budget, data '
              'splits and post-processing differ from the runs above, so they are not comparable numbers. '
              f'For CAM and CAM+CRF the paper gives JA only. Source: {PAPER_SOURCE}.', '',
              '| dataset | method | JA | DI | AC | SE | SP |', '|---|---|---|---|---|---|---|']
    for dataset, methods in PAPER.items():
        for method, values in methods.items():
            lines.append(f'| {dataset} | {method} | ' + ' | '.join(_num(values.get(k), 1) for k in SCORE_NAMES)
                         + ' |')
    return '\n'.join(lines) + '\n'


def _release_name(row):
    """How the headline names a pipeline's release: its file when the pipeline wrote it into the repository
    (weights/), else the pipeline's name (a file under the result folder is no path for a reader)."""
    file = row['file']
    if file and not os.path.isabs(file) and not os.path.normpath(file).startswith('..'):
        return f'`{file}`: '
    return f"pipeline `{row['run']}`: "


def headline(tables, opt):
    """The README section (between <!-- results start --> and <!-- results end -->) from the same rows
    as RESULTS.md: per dataset the released file's testA DI before and after the CRF, its testB share of
    normal images given any lesion pixel, the best weakly supervised baseline (CAM, PCM, SEAM, PSA or IRN, with
    or without the CRF), Otsu and the paper's figure."""
    results = os.path.join(opt.out_dir, 'RESULTS.md')
    link = os.path.relpath(os.path.abspath(results), os.path.dirname(os.path.abspath(opt.readme)))
    lines = ['<!-- results start -->', '## How well it works', '',
             '| dataset | released file (pipeline): testA DI before -> after CRF | testB images with any lesion '
             'pixel, after CRF | best baseline (CAM, PCM, SEAM, PSA, IRN): DI | Otsu: DI | paper: DI |',
             '|---|---|---|---|---|---|']
    for dataset, rows in tables.items():
        by_method = {row['method']: row for row in rows}

        def di(method):
            return _num(by_method[method]['scores']['DI']) if method in by_method else '—'
        released, refined = by_method.get(PIPELINE), by_method.get(PIPELINE + '+crf')
        file = _release_name(released) if released else ''
        paper = PAPER.get(dataset, {}).get('CLTNet', {}).get('DI')
        baselines = [row for row in rows if row['method'].split('+')[0] in CAM_FAMILY]
        best = max(baselines, key=lambda row: row['scores']['DI']) if baselines else None
        cells = [dataset, f'{file}{di(PIPELINE)} -> {di(PIPELINE + "+crf")}' if released else '—',
                 _num(refined['fp_rate'], 2) if refined else '—',
                 f"{_row_name(best['method'])} {di(best['method'])}" if best else '—', di('otsu'),
                 _num(None if paper is None else paper / 100)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'DI: Dice, mean over the testA images, in [0, 1]; every choice made on val (or val plus held-out '
              'few-shot images), never on testA (the released file\'s testA scored once, by the pipeline). The '
              'paper\'s figure is its own setup (GPU, full training budget, its splits), for orientation only.', '',
              f'Written by `{_command(opt)}` from the runs\' own records and summaries; every row, its training '
              f'time and setting, and the CAM baseline: [{link}]({link}).', '<!-- results end -->']
    return '\n'.join(lines)


def main(argv=None):
    """Run (or reuse) every (dataset, method), then write RESULTS.md and results.json; returns the
    results.json object. With --speed: tools/speed_benchmark.py's main and its report."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if '--speed' in argv:
        return speed_benchmark.main([arg for arg in argv if arg != '--speed'])
    opt = parse(argv)
    started = time.time()
    runs = [Run(opt, dataset, method) for dataset in opt.datasets for method in opt.methods]
    by_key = {(run.dataset, run.method): run for run in runs}
    for run in runs:
        if run.pipeline:
            read_pipeline(run, opt)  # before anything trains: a pipeline not (yet) run stops here
    for run in runs:
        if run.pipeline:
            continue  # pipeline.py trained and tested it
        # Pseudo-masks are needed only to train; a reused stage-2 run keeps what it was trained on.
        if run.pseudo_source and not (opt.reuse and list_checkpoints(run.dir)):
            make_pseudo_masks(run, by_key[(run.dataset, 'cltnet')], opt)
        train_run(run, opt)
        test_and_refine(run, opt)
    tables = {dataset: [row for run in runs if run.dataset == dataset for row in collect(run, opt)]
              for dataset in opt.datasets}
    results = {dataset: {row['method']: row['scores'] for row in rows} for dataset, rows in tables.items()}
    markdown = os.path.join(opt.out_dir, 'RESULTS.md')
    write_json_atomic(os.path.join(opt.out_dir, 'results.json'), results)
    write_text_atomic(markdown, render(tables, opt, started, time.time()))
    for rows in tables.values():
        if verdict(rows):
            print(verdict(rows))
    print(f'wrote {markdown} and {os.path.join(opt.out_dir, "results.json")} from {len(runs)} runs')
    if opt.readme:
        replace_section(opt.readme, 'results', headline(tables, opt))
        print(f'wrote the results section of {opt.readme}')
    return results


if __name__ == '__main__':
    main()
