"""Extract lesion masks with a trained CLTNet (or a baseline, ``--model cam|otsu``) and score them.

    python test.py --dataroot ../shared/datasets --dataset ISIC --name cltnet
    python test.py --dataroot ROOT --dataset ISIC --weights weights/ISIC.pt --name released
    python test.py --dataroot ROOT --dataset ISIC --model otsu --name otsu   # training-free: no checkpoint

Checkpoint, map mode, threshold and post-processing are chosen on ``val`` (best mean Dice), then, for a
run that held normal images out of training, the image-level gate on val plus those images; all are
applied unchanged to testA / testB; test labels are read only to score. A ``--weights`` file that stores
its choices (a released file) is served with them, as predict.py does, unless ``--rechoose True``. Outputs go to
<result_dir>/<dataset>/<folder>/<name>/test/<split>/ and the run's index.html.
"""
import os
import sys
import time

from util.shutdown import exit_quietly_on_ctrl_c

exit_quietly_on_ctrl_c(__name__)  # before the slow imports below (torch: seconds)

import numpy as np
import torch

from data.image_io import write_json_atomic, write_png_atomic
from data.layout import LayoutError, check_split, hold_out_spec
from data.selection_set import selection_set
from data.synthetic import make_demo_if_missing
from models import find_model_class
from models.weights_file import build_model, check_dataset, load_model, read_state, serving_state, stored_choices
from options.base_options import loader_args, run_dir
from options.test_options import TestOptions
from records.run_folder import (checkpoints_folder, image_path, list_checkpoints, metrics_path, split_folder,
                                stage_folder, summary_path, test_record_path)
from util.full_disk import exit_on_full_disk
from evaluation.gate import choose_gate
from util.hardware import apply_hardware_options
from reporting.html import write_run_report
from evaluation.inference import available_map_modes, predict_split
from evaluation.metrics import SegmentationScores, roc_auc, write_metrics_csv
from reporting.overlay import draw_overlay
from util.preflight import check_output_dir
from records.record_io import (TEST_SELECTION_REQUIRED, TEST_SELECTION_TYPES, RecordError, read_record,
                               selection_problem, write_record)
from util.run_lock import RunLock
from evaluation.selection import apply_rule, gate_rejects, select, select_fixed_rule, served_selection


def sources(opt, folder):
    """[(step, path)] of the files to score on val: the run's checkpoints, or the weights file; one
    pseudo-source (0, None) for a model with ``needs_checkpoint = False`` (the training-free ones)."""
    if not getattr(find_model_class(opt.model), 'needs_checkpoint', True):
        return [(0, None)]
    if opt.weights:
        state = read_state(opt.weights)
        check_dataset(state, opt.dataset, opt.weights, opt.allow_other_dataset)
        return [(state.get('step', 0), opt.weights)]
    found = list_checkpoints(folder)
    if not found:
        raise SystemExit(f'error: no checkpoint in {checkpoints_folder(folder)}; train first '
                         f'(python train.py ... --name {opt.name}) or pass --weights FILE')
    if opt.which_iter == 'latest':
        return found[-1:]
    if opt.which_iter != 'all':
        chosen = [entry for entry in found if entry[0] == int(opt.which_iter)]
        if not chosen:
            raise SystemExit(f'error: no checkpoint for step {opt.which_iter} in {checkpoints_folder(folder)}; '
                             f'available: {", ".join(str(s) for s, _ in found)}')
        return chosen
    return found


def trained_options(candidates):
    """The training options stored with the files to choose among (a two-stage file: the U-Net's), {} for
    a model without a file."""
    path = candidates[-1][1]
    return read_state(path).get('options', {}) if path else {}


def few_to_choose_on(opt, options, data_dir):
    """The few-shot folder whose labelled images val selection adds: --select_few, else the one the run
    held out of training (train.py --select_few, in its ``options``), else ''."""
    if opt.select_few and not os.path.isdir(os.path.join(data_dir, 'few_sample', opt.select_few)):
        raise SystemExit(f'error: --select_few {opt.select_few}: {data_dir}/few_sample/{opt.select_few} not found; '
                         f'pass a folder of few_sample/ or leave --select_few empty to choose on val alone')
    if not opt.select_few:
        return options.get('select_few') or ''
    if opt.select_few == options.get('few_sample'):
        raise SystemExit(f'error: --select_few {opt.select_few}: this model trained on those labels '
                         f'(train.py --few_sample {opt.select_few}), so they cannot judge it; choose on val alone '
                         f'or on a few-shot folder it never learned from')
    return opt.select_few


def present_few(data_dir, few):
    """``few`` when the dataset has few_sample/<few> (held out of training to choose on), else ''."""
    if few and not os.path.isdir(os.path.join(data_dir, 'few_sample', few)):
        print(f'note: {data_dir}/few_sample/{few} (held out of training to choose on) not found: choosing on val alone')
        return ''
    return few


def set_to_choose_on(data_dir, val, few, options):
    """The selection set (data/selection_set.py) to choose on: ``val``'s pairs, those of few_sample/<few> and
    the normal images the run held out of training (train.py --hold_out_normals, in its ``options``), to
    choose the gate and the CRF on; without normals when there is no B_weak folder to take them from."""
    try:
        return selection_set(data_dir, val, few, **hold_out_spec(options))
    except LayoutError:
        print(f'note: {data_dir} has no <M>_B_weak folder to take the normal images held out of training from: '
              f'choosing without them')
        return selection_set(data_dir, val, few)


def selection_items(model, pairs, normals, opt, desc, keep_visuals=False):
    """predict_split items of the selection set: ``pairs`` (labelled) and the held-out ``normals``, each of
    those with an empty label and ``normal`` True."""
    items = predict_split(model, pairs + [(path, None) for path in normals], desc, keep_visuals=keep_visuals,
                          **loader_args(opt))
    for item in items[len(pairs):]:
        item.update(gt=np.zeros(next(iter(item['maps'].values())).shape, bool), normal=True)
    return items


def with_gate(opt, selection, pairs, normals, held_out):
    """``selection`` with the image-level gate chosen on ``pairs`` and the held-out ``normals`` (evaluation/gate.py;
    ``held_out``: how the run held them out, ``hold_out_spec``), or none and why. The score is that of the
    stage giving the chosen map: it must not have trained on them."""
    mode = selection['map_mode']
    state = serving_state(read_state(selection['checkpoint']), mode)
    selection = dict(selection, **held_out,
                     chosen_on=f"{selection['chosen_on']} + {len(normals)} normal images held out of B_weak")
    held = hold_out_spec(state.get('options') or {})
    if held != held_out:
        return dict(selection, gate=None, gate_choice={
            'reason': f'the image-level score of map {mode} comes from a network that trained on those normal '
                      f'images (it held out {held["hold_out_normals"]}), so they cannot judge a gate on it'})
    items = selection_items(build_model(opt, state, selection['checkpoint']), pairs, normals, opt, 'gate')
    if any(item['score'] is None for item in items):
        return dict(selection, gate=None, gate_choice={'reason': 'the model gives no image-level score'})
    gate, figures = choose_gate(selection, items)
    return dict(selection, gate=gate, gate_choice=figures)


def stored_to_serve(opt):
    """The choices stored in --weights for --map_mode, served unchanged unless --rechoose True; None when
    there is no such file or it holds no choices for that map (a training checkpoint: chosen on val)."""
    if not opt.weights or getattr(find_model_class(opt.model), 'needs_checkpoint', True) is False:
        return None
    return stored_choices(read_state(opt.weights), opt.map_mode)


def choose(opt, folder, data_dir, candidates):
    """The rule: stored in --weights (unless --rechoose True), else chosen on val (plus the run's held-out
    few-shot images; the gate also on its held-out normal images); recorded in test/selection.json."""
    stored = stored_to_serve(opt)
    record_path = test_record_path(folder)
    if stored and not opt.rechoose:
        return serve_stored(opt, record_path, stored)
    options = trained_options(candidates)
    few = few_to_choose_on(opt, options, data_dir)
    val = split_pairs(data_dir, 'val', opt)
    if val is None:
        if not stored:
            raise SystemExit(f'error: {data_dir}/val not found, and nothing stored to fall back on; '
                             f'add a val split (images + labels) or pass --weights FILE')
        print(f'note: --rechoose True, but {data_dir}/val not found: serving the choices stored in {opt.weights}')
        return serve_stored(opt, record_path, stored)
    few = present_few(data_dir, few)
    val, normals = set_to_choose_on(data_dir, val, few, options)
    first = load_model(opt, candidates[0][1])
    # The maps the model offers belong to the key: a model that gained a map (new code, same checkpoints)
    # must be chosen again, not served the choice made among the old ones.
    key = {'version': 2, 'sources': [[s, p] + ([os.path.getsize(p), os.path.getmtime(p)] if p else [])
                                     for s, p in candidates],
           'map_mode': opt.map_mode, 'maps': list(available_map_modes(first.map_modes)),
           'val': [os.path.basename(p) for p, _ in val]}
    if normals:
        key['normals'] = [os.path.basename(path) for path in normals]
    earlier = earlier_record(record_path)
    if earlier.get('key') == key and not opt.reselect:
        print(f'val selection already recorded in {record_path} for these checkpoints (--reselect to choose again)')
        return earlier['selection']
    items_by_source = {}
    for step, path in candidates:
        model = first if (step, path) == candidates[0] else load_model(opt, path)
        available = available_map_modes(model.map_modes)
        if opt.map_mode not in ('auto', *available):
            raise SystemExit(f"error: --map_mode {opt.map_mode}: this model's maps are {', '.join(available)}")
        items_by_source[(step, path)] = predict_split(model, val, f'val @ {step}', **loader_args(opt))
    modes = [opt.map_mode] if opt.map_mode != 'auto' else list(items_by_source[candidates[0]][0]['maps'])
    fixed_rule = getattr(type(model), 'fixed_rule', None)
    if fixed_rule:
        selection = dict(select_fixed_rule(items_by_source, modes, fixed_rule), chosen_on='val')
    else:
        selection = dict(select(items_by_source, modes), chosen_on='val')
    if few:
        selection.update(select_few=few, chosen_on=f'val + few_sample/{few}')
    if normals:
        selection = with_gate(opt, selection, val, normals, hold_out_spec(options))
    if earlier and without_ranking(earlier.get('selection', {})) != without_ranking(selection):
        print(f'note: {record_path} held another decision ({describe(earlier["selection"])}); '
              f'it now records this one ({describe(selection)})')
    write_record(record_path, {'key': key, 'selection': selection}, opt.command_line)
    return selection


def earlier_record(record_path):
    """test.py's earlier record (its cache), {} when there is none or it is damaged: then it is written anew."""
    try:
        earlier = read_record(record_path)
    except RecordError as error:
        print(f'note: {error.path} {error.problem}: test.py writes it anew')
        return {}
    problem = earlier and selection_problem(earlier.get('selection'), TEST_SELECTION_TYPES, TEST_SELECTION_REQUIRED)
    if problem:
        print(f'note: {record_path} {problem}: test.py writes it anew')
        return {}
    return earlier


def serve_stored(opt, record_path, stored):
    """Record and return the choices ``stored`` in --weights, served unchanged (util/selection.served_selection)."""
    selection = served_selection(stored, opt.weights)
    earlier = earlier_record(record_path)
    if earlier and without_ranking(earlier.get('selection', {})) != selection:
        print(f'note: {record_path} held another decision ({describe(earlier["selection"])}); '
              f'it now records the choices stored in {opt.weights}')
    write_record(record_path, {'key': None, 'selection': selection}, opt.command_line)
    return selection


def without_ranking(selection):
    """The decision of a selection, without the ranking of the candidates behind it."""
    return {k: v for k, v in selection.items() if k != 'ranking'}


def describe(selection):
    """One-line summary of a selection: step, map, binarisation, post-processing, gate."""
    gate = f" gate {selection['gate']['threshold']:.4g}" if selection.get('gate') else ''
    return (f"step {selection.get('step')} map {selection.get('map_mode')} {selection.get('binarize')} "
            f"{selection.get('threshold')} {selection.get('postprocess')}{gate}")


def split_pairs(data_dir, split, opt):
    """(image, label) pairs of ``split``, None when the split folder does not exist."""
    if not os.path.isdir(os.path.join(data_dir, split)):
        return None
    try:
        files = check_split(data_dir, split, need_labels=split != 'testB', skip_bad=opt.skip_bad_images)
    except LayoutError as error:
        raise SystemExit(f'error: {error}\n(use --skip_bad_images True to go on without the listed files)')
    if files.skipped:
        print(f'{split}: skipped {len(files.skipped)} file(s):', *files.skipped, sep='\n  ')
    return files.pairs


def write_split(items, rule, out_dir, opt, elapsed):
    """Masks, calibrated maps, overlays, visuals, metrics.csv and summary.json of one split (with a gate:
    the names of the images it emptied, which crf.py keeps empty)."""
    scores = SegmentationScores(surface=True)
    areas, gated = [], []
    for item in items:
        mask, calibrated = apply_rule(rule, item['maps'][rule['map_mode']], item['score'])
        name = item['name']
        if gate_rejects(rule, item['score']):
            gated.append(name)
        write_png_atomic(image_path(out_dir, 'prob', name), np.round(calibrated * 65535).astype(np.uint16))
        write_png_atomic(image_path(out_dir, 'masks', name), mask.astype(np.uint8) * 255)
        write_png_atomic(image_path(out_dir, 'overlays', name), draw_overlay(item['raw'], mask, item['gt']))
        for folder, visual in (('translation', 'translated'), ('cam', 'heatmap')):
            if visual in item:  # not every model has them (cam: no translation; otsu: neither)
                write_png_atomic(image_path(out_dir, folder, name), item[visual])
        areas.append(float(mask.mean()))
        if item['gt'] is not None:
            scores.add(name, mask, item['gt'])
    summary = {'n_images': len(items), 'images_per_second': len(items) / max(elapsed, 1e-9)}
    if len(scores):
        summary.update(scores.summary())
        write_metrics_csv(metrics_path(out_dir), scores.rows())
    else:
        summary.update(fp_rate=float(np.mean([a > 0 for a in areas])), mean_area=float(np.mean(areas)))
    if rule.get('gate'):
        summary['gated'] = gated
    summary.update(selection=rule, command=opt.command_line)
    return summary


def main(argv=None):
    """Parse ``argv`` (default sys.argv[1:]) and test, holding the run folder."""
    opt = TestOptions().parse(argv)
    check_output_dir(stage_folder(run_dir(opt), 'test'))
    with RunLock(run_dir(opt), 'test.py'), exit_on_full_disk('run test.py again'):
        evaluate(opt)


def evaluate(opt):
    """Choose the rule on val, apply it to every split, write their outputs and print the table."""
    apply_hardware_options(opt)
    torch.manual_seed(opt.seed)
    make_demo_if_missing(opt.dataroot, opt.dataset, opt.folder)
    data_dir = os.path.join(opt.dataroot, opt.dataset, opt.folder)
    if not os.path.isdir(data_dir):
        raise SystemExit(f'error: {data_dir} not found; check --dataroot, --dataset and --folder')
    folder = run_dir(opt)
    candidates = sources(opt, folder)
    rule = choose(opt, folder, data_dir, candidates)
    # The chosen map's stage alone: its image-level score is the one the gate was chosen on.
    model = load_model(opt, rule['checkpoint'], serve_map=rule['map_mode'])
    val_DI = f"(val DI {rule['val_DI']:.4f})" if 'val_DI' in rule else ''
    if rule.get('stored_in'):
        print(f"choices stored in {rule['stored_in']} (chosen there on {rule['stored'].get('chosen_on')}), served "
              f"unchanged (--rechoose True to choose on val): {describe(rule)}")
    else:
        print(f"chosen on {rule['chosen_on']}: {describe(rule)} {val_DI}")
    if 'gate_choice' in rule:
        print('image-level gate:', ', '.join(f'{k} {v}' for k, v in rule['gate_choice'].items()))
    summaries, scores = {}, {}
    for split in ['val'] + [s for s in opt.splits if s != 'val']:
        pairs = split_pairs(data_dir, split, opt)
        if pairs is None:
            continue
        pairs, normals = (selection_set(data_dir, pairs, present_few(data_dir, rule.get('select_few', '')),
                                        **hold_out_spec(rule)) if split == 'val' else (pairs, []))
        started = time.time()
        items = selection_items(model, pairs, normals, opt, split, keep_visuals=True)
        summary = write_split(items, rule, split_folder(folder, 'test', split), opt, time.time() - started)
        summaries[split] = summary
        if all(item['score'] is not None for item in items):
            scores[split] = [item['score'] for item in items]
    if 'testA' in scores and 'testB' in scores:
        summaries['testA']['auc'] = roc_auc(scores['testA'] + scores['testB'],
                                            [1] * len(scores['testA']) + [0] * len(scores['testB']))
    for split, summary in summaries.items():
        write_json_atomic(summary_path(split_folder(folder, 'test', split)), summary)
    report = write_run_report(folder)
    print(format_table(summaries))
    print(f"outputs in {stage_folder(folder, 'test')}/; report {report}")


def format_table(summaries):
    """Plain-text table of JA DI AC SE SP per split (testB: false-positive rate and area)."""
    lines = [f"{'split':<8}{'n':>5}" + ''.join(f'{k:>8}' for k in ('JA', 'DI', 'AC', 'SE', 'SP')) + '    extra']
    for split, s in summaries.items():
        if 'DI' in s:
            extra = f"AUC {s['auc']:.3f}" if 'auc' in s else ''
            scores = ''.join(f"{s[k]:>8.4f}" for k in ('JA', 'DI', 'AC', 'SE', 'SP'))
            lines.append(f"{split:<8}{s['n_images']:>5}{scores}    {extra}")
        else:
            lines.append(f"{split:<8}{s['n_images']:>5}    images with any lesion: {s['fp_rate']:.3f}, "
                         f"mean predicted area {s['mean_area']:.4f}")
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
