"""One command from two folders of weakly labelled images to a released two-stage weights file.

    python pipeline.py --dataroot ../shared/datasets --dataset ISIC --recipe recipes/ISIC.toml \\
        --name isic --out weights/ISIC.pt --readme weights/README.md

Steps, each its own script run as its own process, in run folders beside <result_dir>/<dataset>/<folder>/<name>/:
    stage1          train.py (or the recipe's from_stage1 file)           -> <name>_stage1/
    stage1_test     test.py --splits val: checkpoint, map, rule on val      (test/selection.json)
    stage1_crf      crf.py --splits val: CRF parameters on val              (crf/selection.json)
    stage1_export   tools.export_weights -> <name>/stage1.pt (only when stage 1 was trained here)
    stage1_pseudo   pseudo.py: pseudo-masks of every training image
    rN_train        train.py --stage 2 on the pseudo-masks before it        -> <name>_rN/
    rN_test, rN_crf as above; rN_pseudo (all but the last round)
    choose          the round with the best val DI after the CRF
    cascade         tools.export_weights --generator: stage-1 generator + that U-Net -> <name>/cascade.pt
    release_test    test.py --weights cascade.pt: maps of both stages chosen on val; testA and testB scored
                    here, once                                               -> <name>_release/
    release_crf     crf.py on val, testA, testB
    release_export  tools.export_weights -> --out, holding the recipe, commit and every step's record

Every choice is made on the selection set (val, or val + the recipe's held-out few-shot folder; the
image-level gate and the CRF of stage-2 runs also on the recipe's normal images held out of training);
testA is only scored, at the end. <name>/pipeline.json records each step's command, input digests, output
digests, time and machine: the same command again skips the steps that are up to date, continues an
interrupted training with --resume, and redoes a step whose flags or inputs changed and every step
after it. pipeline.json and the released file describe the steps of this run alone: the records of steps
no longer in it (fewer rounds, a stage-1 file instead of training one) are kept under 'superseded', never
released, and come back when the step does. Every recipe value is checked by its step's script before any
step runs. Ctrl-C (or SIGTERM) stops the running step, which saves what it has; the exit status is then
128 + the signal (130, 143) and the same command continues. The pipeline sets --dataroot, --dataset,
--folder, --name, --result_dir, --seed, --stage, --pseudo, --weights, --splits, --select_few,
--hold_out_normals, --hold_out_group, --resume, --reselect, --rechoose and --which_iter itself; every other
flag comes from the recipe (workflow/recipe.py).
"""
import argparse
import os
import shlex
import sys

from data.image_io import write_json_atomic
from data.synthetic import make_demo_if_missing
from models.cascade_model import STAGE1_MODELS
from models.weights_file import read_state
from options.base_options import check_folder_names, default_folder
from util.full_disk import exit_on_full_disk
from records.pipeline_record import PipelineRecord, digest
from evaluation.release_rules import ROUND_RULE, best_round
from reporting.pipeline_report import check_readme, update_readme
from util.preflight import check_output_dir
from workflow.recipe import RecipeError, check_step_flags, read_recipe, recipe_relative, step_flags
from records.record_io import RecordError, read_record
from records.run_folder import (checkpoints_folder, crf_record_path, pipeline_file, pipeline_record_path,
                                pipeline_run_name, pipeline_snapshot_path, pseudo_folder, run_folder, run_in,
                                runs_folder, stage_folder, test_record_path)
from util.run_lock import RunLock
from workflow.run_script import run_script
from workflow.step_runner import Step, StepRunner, stops_cleanly


class Pipeline:
    def __init__(self, args, recipe):
        self.args, self.recipe = args, recipe
        self.settings = recipe['pipeline']
        self.seed = args.seed if args.seed is not None else self.settings['seed']
        self.root = runs_folder(args.result_dir, args.dataset, args.folder)
        self.folder = run_in(self.root, args.name)
        self.data_dir = os.path.join(args.dataroot, args.dataset, args.folder)
        self.record = PipelineRecord(pipeline_record_path(self.folder))
        # Every step also reads the dataset folder: its digest, once it exists (run).
        self.runner = StepRunner(self.record, run_script, context={'dataset': None})
        self.planned = None  # while planning (plan): the steps, which are listed instead of run

    def run_name(self, suffix):
        return pipeline_run_name(self.args.name, suffix)

    def run_folder(self, suffix):
        return run_in(self.root, self.run_name(suffix))

    def common(self, suffix, section):
        """The words every step of run ``suffix`` starts with: data, run, seed, then the recipe's flags."""
        return ['--dataroot', self.args.dataroot, '--dataset', self.args.dataset, '--folder', self.args.folder,
                '--result_dir', self.args.result_dir, '--name', self.run_name(suffix), '--seed', str(self.seed),
                *step_flags(self.recipe, section)]

    def execute(self, step):
        """Run ``step`` unless it is up to date; record it in pipeline.json (while planning: list it)."""
        if self.planned is not None:
            self.planned.append(step)
        else:
            self.runner.execute(step)

    def select_few(self):
        """The words that name the recipe's held-out few-shot folder, or none."""
        return ['--select_few', self.settings['select_few']] if self.settings['select_few'] else []

    def hold_out_normals(self):
        """The words that hold the recipe's normal images out of a stage-2 training, or none."""
        count, group = self.settings['hold_out_normals'], self.settings['hold_out_group']
        if not count:
            return []
        return ['--hold_out_normals', str(count), *(['--hold_out_group', group] if group else [])]

    def test_crf(self, suffix, weights=None, splits='val'):
        """The test.py and crf.py steps of run ``suffix`` (choices on the selection set; stage-2 runs
        record their held-out folder themselves)."""
        folder = self.run_folder(suffix)
        few = self.select_few() if suffix == 'stage1' else []
        # --rechoose: the files the pipeline tests (stage-1 file, cascade.pt) store choices, made anew here on val.
        source = ['--weights', weights, '--rechoose', 'True'] if weights else []
        checkpoints = weights or checkpoints_folder(folder)
        tested, refined = stage_folder(folder, 'test'), stage_folder(folder, 'crf')
        self.execute(Step(f'{suffix}_test', ['test.py', *self.common(suffix, 'test'), '--splits', splits,
                                             *source, *few],
                          inputs=[checkpoints], outputs=[tested], clears=[tested], section='test'))
        self.execute(Step(f'{suffix}_crf', ['crf.py', *self.common(suffix, 'crf'), '--splits', splits, *source],
                          inputs=[tested], outputs=[refined], clears=[refined], section='crf'))

    def pseudo(self, suffix, weights=None):
        folder = self.run_folder(suffix)
        source = ['--weights', weights] if weights else []
        self.execute(Step(f'{suffix}_pseudo', ['pseudo.py', *self.common(suffix, 'pseudo'), *source],
                          inputs=[weights or checkpoints_folder(folder), test_record_path(folder),
                                  crf_record_path(folder)],
                          outputs=[pseudo_folder(folder)], clears=[pseudo_folder(folder)], section='pseudo'))

    def export(self, name, run, out, extra=(), inputs=()):
        self.execute(Step(name, ['-m', 'tools.export_weights', '--run', run, '--out', out, *extra],
                          inputs=[test_record_path(run), crf_record_path(run), *inputs], outputs=[out]))

    def stage1_source(self):
        """The stage-1 file to start from (--from_stage1, else the recipe's), or '' when stage 1 trains here
        (--from_stage1 '' trains it even where the recipe names a file: the reproduction of that file)."""
        return self.settings['from_stage1'] if self.args.from_stage1 is None else self.args.from_stage1

    def stage1(self):
        """Stage 1 trained here (and exported) or taken from the recipe's file; returns the file."""
        from_file = self.stage1_source()
        if from_file:
            self.test_crf('stage1', weights=from_file)
            self.pseudo('stage1', weights=from_file)
            return from_file
        folder = self.run_folder('stage1')
        checkpoints = checkpoints_folder(folder)
        self.execute(Step('stage1', ['train.py', *self.common('stage1', 'stage1')], inputs=[],
                          outputs=[checkpoints], clears=[folder], trains=True, section='stage1'))
        self.test_crf('stage1')
        stage1_file = pipeline_file(self.folder, 'stage1')
        self.export('stage1_export', folder, stage1_file, inputs=[checkpoints])
        self.pseudo('stage1')
        return stage1_file

    def rounds(self):
        """Train, test and refine every stage-2 round; returns their run suffixes."""
        previous, suffixes = 'stage1', []
        held_out = self.select_few() + self.hold_out_normals()
        for index in range(1, self.settings['rounds'] + 1):
            suffix = f'r{index}'
            folder = self.run_folder(suffix)
            if index > 1:
                self.pseudo(previous)
            self.execute(Step(f'{suffix}_train', ['train.py', *self.common(suffix, 'stage2'), '--stage', '2',
                                                  '--pseudo', self.run_name(previous), *held_out],
                              inputs=[pseudo_folder(self.run_folder(previous))],
                              outputs=[checkpoints_folder(folder)], clears=[folder], trains=True,
                              section='stage2'))
            self.test_crf(suffix)
            previous = suffix
            suffixes.append(suffix)
        return suffixes

    def choose_round(self, suffixes):
        """The round whose val DI after the CRF is best (the earlier on a tie); recorded as step 'choose'.
        While planning (no round has run): the first."""
        if self.planned is not None:
            return suffixes[0]
        ranking = []
        for suffix in suffixes:
            selection = read_record(crf_record_path(self.run_folder(suffix)))['selection']
            ranking.append({'run': self.run_name(suffix), 'val_DI_after_crf': selection['val_DI_after'],
                            'chosen_on': selection['chosen_on']})
        best = best_round(ranking)
        self.record.data['choose'] = {'rule': ROUND_RULE, 'ranking': ranking,
                                      'chosen': ranking[best]['run']}
        self.record.save()
        print('rounds by val DI after the CRF:', ', '.join(f"{r['run']} {r['val_DI_after_crf']:.4f}" for r in ranking),
              f"-> {ranking[best]['run']}")
        return suffixes[best]

    def release(self, stage1_file, best):
        cascade = pipeline_file(self.folder, 'cascade')
        best_folder = self.run_folder(best)
        self.export('cascade', best_folder, cascade, ['--generator', stage1_file],
                    inputs=[checkpoints_folder(best_folder), stage1_file])
        self.test_crf('release', weights=cascade, splits='val,testA,testB')
        snapshot = pipeline_snapshot_path(self.folder)
        if self.planned is None:
            self.write_snapshot(snapshot)
        self.export('release_export', self.run_folder('release'), self.args.out, ['--pipeline', snapshot],
                    inputs=[cascade, snapshot])

    def write_snapshot(self, path):
        """What the released file keeps under 'pipeline': the command, the recipe, the choice of the
        round and the record of every step of this run so far (those do not change when the steps are up to
        date; pipeline.json holds only this run's steps, see ``run``)."""
        with open(self.args.recipe, encoding='utf-8') as handle:
            recipe_text = handle.read()
        snapshot = {'command': self.args.command, 'recipe_path': recipe_relative(self.args.recipe),
                    'recipe': recipe_text, 'seed': self.seed, 'choose': self.record.data.get('choose'),
                    'steps': {name: {k: step[k] for k in ('argv', 'commit', 'seconds', 'machine')}
                              for name, step in self.record.steps.items() if name != 'release_export'}}
        # The recipe as run: what the command set instead of the file (kept out when nothing, so the
        # snapshots of runs without such flags stay as they were).
        overrides = {f'pipeline.{key}': getattr(self.args, key) for key in ('from_stage1', 'seed')
                     if getattr(self.args, key) is not None}
        if overrides:
            snapshot['overrides'] = overrides
        if _read_snapshot(path) != snapshot:
            write_json_atomic(path, snapshot)

    def plan(self):
        """Every step of this run, in order, none of them run (the round the release takes counts as r1)."""
        self.planned = []
        try:
            self.release(*self.train())
            return self.planned
        finally:
            self.planned = None

    def train(self):
        """Stage 1, then the stage-2 rounds; returns the stage-1 file and the chosen round."""
        stage1_file = self.stage1()
        return stage1_file, self.choose_round(self.rounds())

    def check(self):
        """Before any step runs: the stage-1 file is one, and every step's script takes its recipe flags
        (RecipeError naming the entry otherwise). Returns the planned steps."""
        if self.stage1_source():
            check_stage1_file(self.stage1_source())
        steps = self.plan()
        for step in steps:
            if step.section:
                check_step_flags(self.args.recipe, self.recipe, step.section, step.argv)
        return steps

    def run(self):
        steps = self.check()
        make_demo_if_missing(self.args.dataroot, self.args.dataset, self.args.folder)
        if not os.path.isdir(self.data_dir):
            raise SystemExit(f'error: {self.data_dir} not found; check --dataroot, --dataset and --folder')
        self.runner.context['dataset'] = digest(self.data_dir)
        check_output_dir(self.folder)
        with RunLock(self.folder, 'pipeline.py'):
            # The record describes this run's steps alone; those of an earlier step graph are set aside.
            self.record.keep_only([step.name for step in steps])
            self.run_steps()

    def run_steps(self):
        self.release(*self.train())
        if self.args.readme:
            update_readme(self.args.readme, self.args.dataset, self.args.out, self.record.data,
                          self.run_folder('release'), self.args.command)
        print(f'released {self.args.out}; steps recorded in {self.record.path}')


def check_stage1_file(path):
    """Exit with one line unless ``path`` is a stage-1 weights file (a CLTNet generator or another stage-1
    localisation model such as CAM, as train.py's stage 1 and tools/export_weights.py write it), before any
    step runs."""
    if not os.path.isfile(path):
        raise SystemExit(f'error: stage-1 file {path} not found; fix from_stage1 in the recipe or '
                         f'--from_stage1, or leave both empty to train stage 1')
    model = (read_state(path).get('architecture') or {}).get('model')
    if model not in STAGE1_MODELS:
        kinds = {'cascade': 'a two-stage (cascade) file', 'seg': 'a stage-2 (U-Net) file'}
        kind = kinds.get(model, f'a {model} file')
        raise SystemExit(f'error: {path} is {kind}, not a stage-1 file; from_stage1 takes a stage-1 generator file '
                         f'(weights/ISIC_stage1.pt, or <name>/stage1.pt of a pipeline run): fix from_stage1 in the '
                         f'recipe or --from_stage1')


def _read_snapshot(path):
    """The released file's record as steps.json holds it; None when it is missing or unreadable (then rewritten)."""
    try:
        return read_record(path)
    except (OSError, ValueError):
        return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataroot', default='./dataset',
                        help='folder holding <dataset>/<folder>/ (A/B weak folders, val, testA, testB); '
                             'default ./dataset')
    parser.add_argument('--dataset', required=True, help='dataset name under --dataroot (ISIC, BraTS, demo, yours)')
    parser.add_argument('--folder', default=None, help='data folder under <dataroot>/<dataset>/ (default: isic_1, '
                                                       'brats_1, demo_1 or <dataset>_1)')
    parser.add_argument('--recipe', required=True, help='TOML recipe with every flag of every step (recipes/*.toml)')
    parser.add_argument('--name', default='pipeline',
                        help='pipeline name: its record goes to <result_dir>/<dataset>/<folder>/<name>/, the steps\' '
                             'runs beside it as <name>_stage1, <name>_r1, ..., <name>_release; default pipeline')
    parser.add_argument('--result_dir', default='results', help='root folder of all run outputs; default results')
    parser.add_argument('--out', default=None, help='the two-stage weights file to write; default <run>/release.pt')
    parser.add_argument('--readme', default=None,
                        help="weights README whose --dataset section to rewrite from the pipeline's records "
                             '(e.g. weights/README.md); default: none')
    parser.add_argument('--from_stage1', default=None, metavar='FILE',
                        help="start from this stage-1 weights file instead of the recipe's from_stage1 or training "
                             "stage 1 (e.g. weights/ISIC_stage1.pt); '' trains stage 1 by the recipe's [stage1] "
                             "flags even where the recipe names a file (rebuilds that file)")
    parser.add_argument('--seed', type=int, default=None, help="override the recipe's seed (every step's --seed)")
    args = parser.parse_args(argv)
    args.folder = args.folder or default_folder(args.dataset)
    check_folder_names(parser, args)
    args.out = args.out or pipeline_file(run_folder(args.result_dir, args.dataset, args.folder, args.name), 'release')
    if args.readme:
        check_readme(args.readme)  # now, not after hours of steps
    args.command = 'pipeline.py ' + shlex.join(sys.argv[1:] if argv is None else argv)  # '' stays visible
    return args


def main(argv=None):
    args = parse_args(argv)
    with stops_cleanly('pipeline'):
        try:
            with exit_on_full_disk('run the same command again (finished steps are kept)'):
                Pipeline(args, read_recipe(args.recipe)).run()
        except RecipeError as error:
            raise SystemExit(f'error: {error}') from None
        except RecordError as error:  # a step's record damaged since it ran: that step runs again without it
            raise SystemExit(f'error: {error.path} {error.problem}: delete it and run the same command again') \
                from None


if __name__ == '__main__':
    main()
