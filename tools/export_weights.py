"""Export a run's val-chosen networks (CLTNet: the A->B generator) as a small released-weights file.

    python -m tools.export_weights --run results/ISIC/isic_1/cltnet --out weights/ISIC.pt \
        --readme weights/README.md --dataset ISIC

Reads what test.py (``test/selection.json``) and crf.py (``crf/selection.json``, optional) chose
on val, and stores the test-time networks of the chosen checkpoint (CLTNet's A->B generator, the
stage-2 U-Net) in half precision together with those
choices, the image size and the training options, so ``test.py --weights`` and ``crf.py`` can use
it on data that has no val split. With ``--readme`` it also rewrites that dataset's section of the
weights README from the run's own summary files (no number typed by hand).
"""
import argparse
import os

from models import find_model_class
from models.base_model import CHECKPOINT_FORMAT, atomic_torch_save
from models.cascade_model import STAGE1_MODELS, cascade_architecture
from models.weights_file import read_state
from records.record_io import read_crf_selection, read_test_selection, require_record
from records.run_folder import (crf_record_path, list_checkpoints, pseudo_folder, run_folder, split_folder,
                                summary_path, test_record_path)
from reporting.pipeline_report import replace_section, score_rows
from util.full_disk import exit_on_full_disk


def _read_json(path, what, key):
    """The JSON object at ``path`` with ``key`` of the right type; exit with one line naming the file and
    ``what`` to do when it is missing, damaged or wrong-typed."""
    record = require_record(path, what)
    expected = {'steps': dict, 'command': str}[key]
    if not isinstance(record.get(key), expected):
        raise SystemExit(f'error: {path} has no {key!r} ({expected.__name__}) as its script writes it: {what}')
    return record


def cascade_state(seg_state, generator):
    """A stage-2 (U-Net) checkpoint state joined with the networks of the stage-1 weights file
    ``generator`` (CLTNet's A->B generator, or another localisation model such as the CAM classifier):
    the nets and architecture of models/cascade_model.py."""
    if seg_state['architecture']['model'] != 'seg':
        raise SystemExit('error: --generator needs a stage-2 run (train.py --stage 2); this run trained '
                         f"--model {seg_state['architecture']['model']}")
    stage1 = read_state(generator)
    stage1_model = stage1['architecture']['model']
    if stage1_model not in STAGE1_MODELS:
        raise SystemExit(f'error: {generator} holds a --model {stage1_model} file, not a stage-1 model '
                         f"({', '.join(STAGE1_MODELS)}); pass a stage-1 file such as weights/ISIC_stage1.pt")
    names = find_model_class(stage1_model).served_nets(stage1['architecture'])
    architecture = cascade_architecture(stage1['architecture'], seg_state['architecture'])
    nets = {**{name: stage1['nets'][name] for name in names}, **seg_state['nets']}
    return dict(seg_state, architecture=architecture, nets=nets,
                stage1={key: stage1.get(key) for key in ('options', 'selection', 'step', 'train_seconds')})


def export(run, out, generator=None, pipeline=None):
    """Write the weights file ``out`` for run folder ``run`` (joined with ``generator``'s A->B
    generator when given; keeping the JSON record ``pipeline`` under that key when given); returns
    its selection dict and the state it came from."""
    selection = read_test_selection(test_record_path(run), 'run test.py on this run first')
    crf_record = crf_record_path(run)
    if os.path.isfile(crf_record):
        selection['crf'] = read_crf_selection(crf_record, '')['crf']
    # Re-exported from a run that served a file's stored choices: the choices keep their own provenance.
    selection = {**{k: v for k, v in selection.items() if k not in ('stored', 'stored_in')},
                 **selection.get('stored', {})}
    selection.pop('ranking', None)
    state = read_state(selection['checkpoint'])
    if generator:
        state = cascade_state(state, generator)
    command = pseudo_command(state)
    if command:
        state = dict(state, pseudo_command=command)  # read once; the README section reuses it
    model_class = find_model_class(state['architecture']['model'])
    names = model_class.served_nets(state['architecture'])
    nets = {name: {k: v.half() if v.is_floating_point() else v for k, v in state['nets'][name].items()}
            for name in names}
    selection['checkpoint'] = os.path.basename(selection['checkpoint'])
    if pipeline:
        state = dict(state, pipeline=_read_json(pipeline, 'pass the steps.json that pipeline.py wrote', 'steps'))
    atomic_torch_save({'format': CHECKPOINT_FORMAT, 'kind': 'released-weights',
                       'architecture': state['architecture'], 'nets': nets,
                       'step': state['step'], 'selection': selection, 'options': state['options'],
                       **{key: state[key]
                          for key in ('stage1', 'train_seconds', 'machine', 'pseudo_command', 'pipeline')
                          if key in state}}, out)
    return selection, state


def pseudo_command(state):
    """For a stage-2 network: the pseudo.py command that made its pseudo-masks, else None.

    A released file keeps it (``pseudo_command``), so re-exporting from a test run of that file works
    where the pseudo-masks' folder is gone (another machine); a training checkpoint reads it from the
    pseudo-masks' summary.json.
    """
    options = state['options']
    if options.get('stage', 1) != 2:
        return None
    if state.get('pseudo_command'):
        return state['pseudo_command']
    source = run_folder(options['result_dir'], options['dataset'], options['folder'], options['pseudo'])
    summary = summary_path(pseudo_folder(source))
    return _read_json(summary, "the stage-2 run's pseudo-masks are gone or damaged: run its pseudo.py again",
                      'command')['command']


def _pseudo_lines(state):
    command = pseudo_command(state)
    return [f'Pseudo-masks: `python {command}`', ''] if command else []


def _stage1_lines(state):
    """For a cascade file: how its A->B generator was trained and what val chose for it alone."""
    stage1 = state.get('stage1')
    if not stage1:
        return []
    seconds, chosen, planned = stage1.get('train_seconds'), stage1['selection'], stage1['options'].get('iteration')
    schedule = f' of the {planned}-step schedule' if planned and planned != stage1['step'] else ''
    return ['Two stages: the CLTNet A->B generator (stage 1) and the U-Net trained on its pseudo-masks '
            '(stage 2), joined by `python -m tools.export_weights --run STAGE2_RUN --generator STAGE1_FILE`; '
            '`test.py --weights` then chose among the maps of both on val.', '',
            f"Stage 1 training command: `python {stage1['options']['command_line']}` "
            f"(its checkpoint at step {stage1['step']}{schedule}"
            + (f', reached in {_minutes(seconds)}' if seconds else '')
            + f"; alone, val chose map `{chosen['map_mode']}`).", '', 'Stage 2:', '']


def _minutes(seconds):
    return f'{seconds / 60:.0f} min' if seconds is not None else 'a time not recorded'


def _newest_checkpoint(run):
    """(step, training seconds) of the newest checkpoint of the run folder ``run``, or None where it has none (a
    test run of a weights file)."""
    found = list_checkpoints(run)
    if not found:
        return None
    state = read_state(found[-1][1])
    return state.get('step', found[-1][0]), state.get('train_seconds')


def training_sentence(run, state):
    """What the README says of the training: the whole schedule (its steps and time, from the newest checkpoint
    of ``run``) and, when val chose an earlier checkpoint (``state``), that step and when training reached it."""
    options, chosen = state['options'], state['step']
    where = (f"on: {state.get('machine', 'a machine not recorded')}, {options.get('num_threads') or 'default'} "
             'torch thread(s)')
    newest, planned = _newest_checkpoint(run), options.get('iteration')
    if newest and newest[0] > chosen:
        schedule = ' (the schedule)' if newest[0] == planned else ''
        return (f'Trained {newest[0]} steps{schedule} in {_minutes(newest[1])} {where}; val chose the checkpoint '
                f"at step {chosen} ({_minutes(state.get('train_seconds'))} in).")
    if planned and planned > chosen:  # the schedule's later checkpoints are not in this folder
        return (f'Trained to the {planned}-step schedule {where}; val chose the checkpoint at step {chosen} '
                f"({_minutes(state.get('train_seconds'))} in; the schedule's time is not recorded here).")
    return f"Trained {chosen} steps in {_minutes(state.get('train_seconds'))} {where}."


def readme_section(dataset, run, out, selection, state, readme='weights/README.md'):
    """The weights README section of one file, built from the run's checkpoint and summaries."""
    options = state['options']
    crf = selection.get('crf')
    val_label = (f"val + few_sample/{selection['select_few']}" if selection.get('select_few') else 'val') + (
        f" + {selection['hold_out_normals']} normal images held out of B_weak"
        if selection.get('hold_out_normals') else '')
    lines = [f'<!-- {dataset} start -->', f'## {os.path.basename(out)}', '', *_stage1_lines(state),
             *_pseudo_lines(state),
             f"Training command: `python {options['command_line']}`", '',
             training_sentence(run, state), '',
             f"Chosen on {val_label}: checkpoint step {selection['step']}, map `{selection['map_mode']}`, "
             f"{selection['binarize']} threshold {selection['threshold']}, post-processing "
             f"`{selection['postprocess']}`" + (f"; CRF {crf}" if crf else '')
             + (f"; image-level gate {selection['gate']['threshold']:.4g}" if selection.get('gate') else '') + '.', '',
             '| split | stage | JA | DI | AC | SE | SP |', '|---|---|---|---|---|---|---|',
             *score_rows(run, val_label)[0], '',
             f'Written by `python -m tools.export_weights --run {run} --out {out} --readme {readme} '
             f"--dataset {dataset}` from `{summary_path(split_folder(run, 'test', '*'))}` and "
             f"`{summary_path(split_folder(run, 'crf', '*'))}`.",
             f'<!-- {dataset} end -->']
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tools.export_weights', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--run', required=True, help='run folder: <result_dir>/<dataset>/<folder>/<name>')
    parser.add_argument('--out', required=True, help='weights file to write (e.g. weights/ISIC.pt)')
    parser.add_argument('--readme', default=None, help='weights README whose section for --dataset to rewrite')
    parser.add_argument('--dataset', default=None, help='section name in --readme (e.g. ISIC)')
    parser.add_argument('--generator', default=None, metavar='FILE',
                        help='with a stage-2 run: also store the A->B generator of this stage-1 weights file '
                             '(e.g. weights/ISIC.pt), making a two-stage file (--model cascade) whose maps '
                             'test.py --weights chooses among on val')
    parser.add_argument('--pipeline', default=None, metavar='JSON',
                        help="pipeline.py's record of the steps that made this run (its steps.json), stored in the "
                             "file under 'pipeline'")
    args = parser.parse_args(argv)
    if args.readme and not args.dataset:
        parser.error('--readme needs --dataset')
    with exit_on_full_disk('run python -m tools.export_weights again'):
        selection, state = export(args.run, args.out, args.generator, args.pipeline)
        if args.readme:
            replace_section(args.readme, args.dataset,
                            readme_section(args.dataset, args.run, args.out, selection, state, args.readme))
    size_mb = os.path.getsize(args.out) / 2 ** 20
    print(f"wrote {args.out} ({size_mb:.1f} MB): step {selection['step']}, map {selection['map_mode']}, "
          f"{selection['binarize']} threshold {selection['threshold']}, post-processing {selection['postprocess']}"
          + (f", CRF {selection['crf']}" if 'crf' in selection else ''))


if __name__ == '__main__':
    main()
