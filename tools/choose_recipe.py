"""Which recipe to release: the released pipeline's or a candidate's, chosen by one fixed rule on the
selection set alone (testA is never read).

    python -m tools.choose_recipe --dataroot ../shared/datasets --dataset BraTS --folder brats_1 \
        --result_dir ../runs --released brats_v2 --candidates brats_256,brats_rot

Each name is a finished pipeline.py run (``<name>/pipeline.json`` and its ``<name>_release/``). From the
release run's per-image val scores after the CRF (``crf/val/metrics.csv``) it takes the mean DI over the
selection set's lesion images and the share of the normal images held out of B_weak (``hold_out_normals``)
given any lesion pixel. A candidate replaces the released recipe when its lesion DI is at least
``--margin`` above the released one's and its share of normals with a lesion is not higher (not measured
counts as higher: a candidate that holds no normal images out cannot win), or when its lesion DI is at most
``--tolerance`` below and that share is lower, or at most ``--normals_target`` where the released recipe
measured none; of several such candidates the highest lesion DI wins. Where one of the two held out whole
patients (``hold_out_group``) and the other single images, the other's share counts as not measured: its
normals were slices of patients that stage 2 trained on.
Pipelines that chose on different lesion images are not compared.
"""
import argparse
import json
import os
import shlex
import sys
import tomllib

from data.image_io import write_json_atomic
from data.layout import LayoutError, held_out_normals, hold_out_spec
from evaluation.release_rules import DEFAULT_MARGIN, DEFAULT_NORMALS_TARGET, DEFAULT_TOLERANCE, choose
from records.record_io import RecordError, read_record, require_record
from records.run_folder import (crf_record_path, metrics_path, pipeline_record_path, pipeline_run_name,
                                pipeline_snapshot_path, run_in, runs_folder, split_folder, test_record_path)
from reporting.pipeline_report import replace_section
from reporting.report_cells import read_metrics


def pipeline_scores(result_folder, data_dir, name):
    """Selection-set scores after the CRF of finished pipeline ``name`` under ``result_folder``:
    {'name', 'recipe' (flattened), 'lesion_DI', 'lesion_images' (sorted names), 'normals',
    'normals_with_lesion' (share, None when it held out none), 'normals_by' (the hold_out_group pattern that
    held out whole patients, '' for single images)}."""
    release = run_in(result_folder, pipeline_run_name(name, 'release'))
    hint = f'finish the pipeline first (python pipeline.py ... --name {name})'
    require_record(pipeline_record_path(run_in(result_folder, name)), hint)
    require_record(crf_record_path(release), hint)
    held = hold_out_spec(require_record(test_record_path(release), hint)['selection'])
    try:
        normal_paths = held_out_normals(data_dir, **held)
    except LayoutError as error:
        raise SystemExit(f'error: {error}\n(pass the --dataroot/--dataset/--folder the pipeline {name} ran on)')
    normal_names = {os.path.splitext(os.path.basename(path))[0] for path in normal_paths}
    metrics = metrics_path(split_folder(release, 'crf', 'val'))
    if not os.path.isfile(metrics):
        raise SystemExit(f'error: {metrics} not found: {hint}')
    rows = read_metrics(metrics)[1]
    lesions = [row for row in rows if row['name'] not in normal_names]
    normals = [row for row in rows if row['name'] in normal_names]
    if not lesions:
        raise SystemExit(f'error: {metrics} scores no lesion image: rerun crf.py on that release run')
    return {'name': name, 'recipe': _recipe(pipeline_snapshot_path(run_in(result_folder, name))),
            'lesion_DI': sum(float(row['DI']) for row in lesions) / len(lesions),
            'lesion_images': sorted(row['name'] for row in lesions), 'normals': len(normals),
            'normals_by': held.get('hold_out_group', ''),
            'normals_with_lesion': (sum(int(row['TP']) + int(row['FP']) > 0 for row in normals) / len(normals)
                                    if normals else None)}


def _recipe(snapshot):
    """The recipe a pipeline ran, flattened to {'section.key': value}, from the snapshot it keeps beside its
    record (``steps.json``), with what its command set instead (``overrides``: --from_stage1, --seed); {} when
    there is none; exit with one line when it is damaged."""
    try:
        record = read_record(snapshot)
    except RecordError as error:
        raise SystemExit(f'error: {error}') from None
    text = record.get('recipe') or ''
    overrides = record.get('overrides') or {}
    try:
        sections = tomllib.loads(text) if isinstance(text, str) else None
    except tomllib.TOMLDecodeError:
        sections = None
    if sections is None or not all(isinstance(keys, dict) for keys in sections.values()):
        name = os.path.basename(os.path.dirname(snapshot))
        raise SystemExit(f'error: {snapshot} holds no recipe of [sections] ({json.dumps(text)[:60]}); run the '
                         f'pipeline {name} again with its command (python pipeline.py ... --name {name}): its '
                         f'finished steps are skipped and steps.json is written anew')
    return {**{f'{section}.{key}': value for section, keys in sections.items() for key, value in keys.items()},
            **overrides}


def recipe_changes(released, candidate):
    """What ``candidate``'s recipe sets otherwise than ``released``'s, e.g. 'stage2.img_size = 256'."""
    if not candidate['recipe'] or not released['recipe']:
        return 'recipe not recorded'
    keys = sorted(set(released['recipe']) | set(candidate['recipe']))
    changed = [f"{key} = {json.dumps(candidate['recipe'].get(key, 'unset'))}" for key in keys
               if released['recipe'].get(key) != candidate['recipe'].get(key)]
    return ', '.join(changed) or 'same recipe'


def table(released, candidates, chosen, reasons):
    """Markdown table of every pipeline's figures and the rule's verdict."""
    lines = ['| pipeline | recipe change | lesion images | lesion DI after CRF | held-out normals | '
             'with any lesion pixel | verdict |', '|---|---|---|---|---|---|---|']
    for scores in [released] + candidates:
        share = scores['normals_with_lesion']
        verdict_text = 'released' if scores is released else reasons[scores['name']]
        if scores['name'] == chosen:
            verdict_text += ' -> release'
        change = 'released recipe' if scores is released else recipe_changes(released, scores)
        held = f"{scores['normals']} of whole patients" if scores['normals_by'] else scores['normals']
        lines.append(f"| {scores['name']} | {change} | {len(scores['lesion_images'])} | "
                     f"{scores['lesion_DI']:.4f} | {held} | {'-' if share is None else f'{share:.2f}'} | "
                     f"{verdict_text} |")
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tools.choose_recipe', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataroot', default='./dataset',
                        help='folder holding <dataset>/<folder>/ (its B_weak names the held-out normals)')
    parser.add_argument('--dataset', required=True, help='dataset name, e.g. ISIC or BraTS')
    parser.add_argument('--folder', required=True, help='data folder inside the dataset, e.g. isic_1')
    parser.add_argument('--result_dir', default='./results', help='where the pipelines ran (pipeline.py --result_dir)')
    parser.add_argument('--released', required=True, help='pipeline name of the released recipe, e.g. isic')
    parser.add_argument('--candidates', required=True,
                        help='comma-separated pipeline names of candidate recipes, e.g. isic_256,isic_rot')
    parser.add_argument('--margin', type=float, default=DEFAULT_MARGIN,
                        help='lesion DI a candidate must gain over the released recipe (default %(default)s: half '
                             'the spread three seeds of one recipe gave)')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                        help='lesion DI a candidate may lose when it gives fewer held-out normals a lesion '
                             '(default %(default)s)')
    parser.add_argument('--normals_target', type=float, default=DEFAULT_NORMALS_TARGET,
                        help='highest share of held-out normals with a lesion at which a candidate replaces a '
                             'released recipe that measured none, at most --tolerance less lesion DI (default '
                             '%(default)s, the quality target for normal images)')
    parser.add_argument('--out', default=None, metavar='FILE.json',
                        help='also write the figures and the choice there (atomically)')
    parser.add_argument('--doc', default=None, metavar='FILE.md',
                        help="also write the table and this command into FILE's section of the dataset "
                             '(between <!-- recipes DATASET start --> and <!-- recipes DATASET end -->; appended '
                             'when missing), e.g. docs/RECIPES.md')
    parser.add_argument('--section', default=None, metavar='TITLE',
                        help="with --doc: the section's name instead of the dataset's, e.g. \"ISIC, pretrained "
                             'features\", so a new set of candidates gets a table of its own beside the earlier ones')
    args = parser.parse_args(argv)
    if args.section and not args.doc:
        parser.error('--section names a section of the --doc file: give --doc too (e.g. docs/RECIPES.md)')
    for flag in ('margin', 'tolerance', 'normals_target'):
        if getattr(args, flag) < 0:
            parser.error(f'--{flag} must be at least 0, got {getattr(args, flag)}')
    return args


def main(argv=None):
    args = parse_args(argv)
    data_dir = os.path.join(args.dataroot, args.dataset, args.folder)
    result_folder = runs_folder(args.result_dir, args.dataset, args.folder)
    if not os.path.isdir(data_dir):
        raise SystemExit(f'error: {data_dir} not found; pass the --dataroot/--dataset/--folder the pipelines ran on')
    if args.doc and not os.path.isfile(args.doc):
        raise SystemExit(f'error: {args.doc} not found; --doc adds a section to an existing file, '
                         'e.g. docs/RECIPES.md')
    released = pipeline_scores(result_folder, data_dir, args.released)
    candidates = [pipeline_scores(result_folder, data_dir, name) for name in args.candidates.split(',') if name]
    chosen, reasons = choose(released, candidates, args.margin, args.tolerance, args.normals_target)
    text = table(released, candidates, chosen, reasons)
    print(text)
    print(f'release: {chosen}' + (' (the released recipe stays)' if chosen == args.released else ''))
    command = shlex.join(['python', '-m', 'tools.choose_recipe'] + [str(arg) for arg in (argv or sys.argv[1:])])
    if args.out:
        write_json_atomic(args.out, {'released': released, 'candidates': candidates, 'margin': args.margin,
                                     'tolerance': args.tolerance, 'normals_target': args.normals_target,
                                     'reasons': reasons, 'chosen': chosen,
                                     'command': command})
    if args.doc:
        title = args.section or args.dataset
        key = f'recipes {title}'
        replace_section(args.doc, key, f'<!-- {key} start -->\n### Recipe candidates, {title}\n\n'
                        f'Val figures of each finished pipeline (testA not read); the verdict is the rule of '
                        f'tools/choose_recipe.py (margin {args.margin}, tolerance {args.tolerance}, normals target '
                        f'{args.normals_target}).\n\n{text}\n\n'
                        f'Written by `{command}`.\n<!-- {key} end -->')
    return chosen


if __name__ == '__main__':
    main()
