"""Refine test.py's lesion probability maps with a dense CRF whose parameters are chosen on val.

Reads  <run>/test/<split>/prob/NAME.png (16-bit, calibrated: p >= 0.5 is test.py's decision), the
       dataset images, and labels of val (to choose) and testA (to score);
       and test.py's decision in <run>/test/selection.json;
writes <run>/crf/<split>/masks/, overlays/, metrics.csv, summary.json, <run>/crf/val_grid.json and its
       own decision in <run>/crf/selection.json (the record pseudo.py and export_weights.py read).

The parameters are chosen on the images test.py chose on: val, its held-out few-shot images and its
held-out normal images (scored against an empty label). An image test.py's image-level gate emptied
keeps its empty mask: the CRF never grows a lesion there.

    python crf.py --dataroot ../shared/datasets --dataset ISIC --name cltnet
"""
import glob
import os
import time
from typing import NamedTuple, Optional

from util.shutdown import exit_quietly_on_ctrl_c

exit_quietly_on_ctrl_c(__name__)  # before the slow imports below

import numpy as np

from data.image_io import read_image, read_mask, write_json_atomic, write_png_atomic
from data.layout import LayoutError, check_split, hold_out_spec
from data.selection_set import selection_set
from options.base_options import format_options, run_dir
from options.crf_options import CRFOptions
from refinement.crf_utils import CRFParams, Search, param_grid, read_prob, refine_many, search_digest, search_params
from refinement.gated_crf import refine_ungated
from util.full_disk import exit_on_full_disk
from reporting.html import write_run_report
from evaluation.metrics import SCORE_NAMES, SegmentationScores, write_metrics_csv
from reporting.overlay import draw_overlay
from util.preflight import check_output_dir
from records.record_io import RecordError, file_sha256, read_record, read_test_selection, write_record
from records.run_folder import (crf_record_path, image_folder, image_path, metrics_path, split_folder, stage_folder,
                                summary_path, test_record_path, val_grid_path)
from util.run_lock import RunLock

DETECTION_NAMES = ('fp_rate', 'mean_area')


def _test_hint(opt):
    """The one-line advice to run test.py for this run."""
    weights = f' --weights {opt.weights}' if opt.weights else ''
    return (f'run test.py first (python test.py --dataroot {opt.dataroot} --dataset {opt.dataset} '
            f'--folder {opt.folder}{weights} --name {opt.name})')


def _require_probs(opt, run, split):
    prob_dir = image_folder(split_folder(run, 'test', split), 'prob')
    if not os.path.isdir(prob_dir):
        raise SystemExit(f'error: {prob_dir} not found: {_test_hint(opt)}')


class SplitItem(NamedTuple):
    """One image crf.py refines: its name, image, label (None: a normal image) and test.py map, and whether
    test.py's image-level gate emptied its mask."""
    name: str
    image: str
    label: Optional[str]
    prob: str
    gated: bool


def split_items(opt, run, split, rule=None):
    """[SplitItem] for every image of ``split``; for val, then those of the few-shot folder and the normal
    images (no label) held out of training that test.py's decision ``rule`` chose on too.

    Raises LayoutError for dataset problems, SystemExit when test.py left a map out.
    """
    data_dir = os.path.join(opt.dataroot, opt.dataset, opt.folder)
    files = check_split(data_dir, split, skip_bad=opt.skip_bad_images)
    if files.skipped:
        print(f'{split}: skipped {len(files.skipped)} file(s):', *files.skipped, sep='\n  ')
    pairs = list(files)
    if rule:
        pairs = selection_set(data_dir, pairs, rule.get('select_few'), **hold_out_spec(rule)).pairs()
    tested = split_folder(run, 'test', split)
    gated = set(read_record(summary_path(tested)).get('gated', []))
    items = []
    for image, label in pairs:
        name = os.path.splitext(os.path.basename(image))[0]
        items.append(SplitItem(name, image, label, image_path(tested, 'prob', name), name in gated))
    missing = [item.prob for item in items if not os.path.isfile(item.prob)]
    if missing:
        raise SystemExit(f'error: {missing[0]} not found ({len(missing)} of {len(items)} {split} maps '
                         f'missing): {_test_hint(opt)}')
    return items


def choose_params(opt, run, rule):
    """(CRFParams, selection dict): given, searched on val, or stored with the weights test.py served
    (``rule``: test.py's recorded decision)."""
    has_val = os.path.isdir(split_folder(run, 'test', 'val'))
    # test.py served a weights file's stored choices: its CRF goes with them, unless --rechoose True.
    serve_stored = rule.get('stored_in') and rule.get('crf') and not opt.rechoose
    if opt.crf_params is None and (serve_stored or not has_val):
        stored = rule.get('crf')
        if stored is None:
            raise SystemExit(f'error: no {split_folder(run, "test", "val")} to choose CRF parameters on and no CRF '
                             f'stored with the weights test.py used: pass --crf_params (e.g. alpha=2,sxy=40) '
                             f'or run test.py on a dataset with a val split')
        params = CRFParams.from_dict(stored)
        return params, {'crf': params.as_dict(), 'chosen_on': 'stored', 'val_DI_before': None,
                        'val_DI_after': None}
    if not has_val:
        return opt.crf_params, {'crf': opt.crf_params.as_dict(), 'chosen_on': 'given',
                                'val_DI_before': None, 'val_DI_after': None}
    _require_probs(opt, run, 'val')
    val_summary = read_record(summary_path(split_folder(run, 'test', 'val')))
    val = split_items(opt, run, 'val', rule)
    items = [(item.image, item.prob, item.label, item.gated) for item in val]
    if opt.crf_params:
        combos, digest = [opt.crf_params], None
        best, means, _, threshold_DI = search_params(items, combos, opt.num_workers)
    else:
        combos = param_grid(rule.get('postprocess', 'none'))
        (best, means, _, threshold_DI), digest = grid_search(opt, run, items, combos, val_summary)
    val_before = val_summary.get('DI', threshold_DI)
    few = rule.get('select_few', '')
    # A served rule ('stored') was not chosen here: its val maps are val's alone.
    chosen_on = ('given' if opt.crf_params else 'val' if rule.get('stored_in')
                 else rule.get('chosen_on') or (f'val + few_sample/{few}' if few else 'val'))
    selection = {'crf': combos[best].as_dict(), 'chosen_on': chosen_on, 'val_DI_before': val_before,
                 'val_DI_after': float(means[best])}
    if digest:
        selection['search_sha256'] = digest
    if rule.get('hold_out_normals'):
        part = "val's figures" + ('' if opt.crf_params else ' and choice')
        selection['normals'] = (f"{rule['hold_out_normals']} normal images held out of B_weak, scored against an "
                                f"empty label, are part of {part}")
    if rule.get('gate'):
        selection['gated_images'] = "kept empty: the CRF does not refine an image test.py's gate emptied"
    return combos[best], selection


def grid_search(opt, run, items, combos, val_summary):
    """(Search, its digest) of ``combos`` on ``items``: a search an earlier crf.py stored with the same digest
    (the same images, maps, labels, gate and grid: the same choice) in this run or another run of the data
    folder is reused, else it is run; either way written to crf/val_grid.json with its digest."""
    digest = search_digest(items, combos)
    found, source = stored_search(run, digest, combos)
    if found:
        print(f'CRF search: the same inputs (SHA-256 {digest[:12]}) were searched in {source}: reusing its choice')
    else:
        found = search_params(items, combos, opt.num_workers)
        pruned = int(np.isnan(found.means).sum())
        print(f'CRF search: {len(combos) - pruned} of {len(combos)} settings scored on every image, {pruned} '
              f'dropped once they could no longer win')
    write_json_atomic(val_grid_path(run), {
        'chosen': found.best, 'val_DI_before': val_summary.get('DI', found.before), 'threshold_DI': found.before,
        'inputs_sha256': digest,
        'grid': [{**c.as_dict(), 'DI': _number(m), **({'DI_at_most': float(b)} if np.isfinite(b) else {})}
                 for c, m, b in zip(combos, found.means, found.at_most)]})
    return found, digest


def _number(value):
    """A finite float as itself, NaN (a pruned combo's mean) as None: JSON has no NaN."""
    return float(value) if np.isfinite(value) else None


def stored_search(run, digest, combos):
    """(Search, path of its val_grid.json) stored by crf.py in ``run`` or another run beside it with this
    ``digest`` and these ``combos``; (None, None) when there is none (damaged files are passed over)."""
    paths = glob.glob(val_grid_path(os.path.join(os.path.dirname(run), '*')))
    own = val_grid_path(run)
    for path in sorted(paths, key=lambda p: p != own):
        try:
            grid = read_record(path)
        except RecordError:
            continue
        entries = grid.get('grid')
        if (grid.get('inputs_sha256') != digest or not isinstance(entries, list) or len(entries) != len(combos)
                or not isinstance(grid.get('chosen'), int) or not 0 <= grid['chosen'] < len(combos)):
            continue
        if any(not isinstance(e, dict) or {k: e.get(k) for k in c.as_dict()} != c.as_dict()
               for e, c in zip(entries, combos)):
            continue
        means = np.array([e['DI'] if e.get('DI') is not None else np.nan for e in entries], dtype=float)
        at_most = np.array([e.get('DI_at_most', np.nan) for e in entries], dtype=float)
        return Search(grid['chosen'], means, at_most, float(grid.get('threshold_DI', np.nan))), path
    return None, None


def _test_mask(run, split, name):
    """test.py's mask of one image (its p >= 0.5 when the masks folder is absent)."""
    path = image_path(split_folder(run, 'test', split), 'masks', name)
    if os.path.isfile(path):
        return read_mask(path)
    return read_prob(image_path(split_folder(run, 'test', split), 'prob', name)) >= 0.5


def _detection(masks):
    """testB figures: fraction of images with any lesion pixel, mean lesion fraction of the pixels."""
    return {'fp_rate': float(np.mean([m.any() for m in masks])),
            'mean_area': float(np.mean([m.mean() for m in masks]))}


def _before(run, split, items):
    """test.py's figures for the split: the five means (labelled) or the detection figures (testB)."""
    if split == 'testB':
        return _detection([_test_mask(run, split, item.name) for item in items])
    summary = read_record(summary_path(split_folder(run, 'test', split)))
    if all(k in summary for k in SCORE_NAMES):
        return {k: summary[k] for k in SCORE_NAMES}
    scores = SegmentationScores()
    for item in items:
        mask = _test_mask(run, split, item.name)
        scores.add(item.name, mask, read_mask(item.label) if item.label else np.zeros_like(mask))
    return scores.mean()


def refine_split(opt, run, split, items, params, selection):
    """Refine one split's ``items`` (``split_items``) with ``params``, write its outputs and return its summary
    dict; an image test.py's gate emptied keeps its empty mask.

    testB and the held-out normal images have no labels: they are scored against empty masks in
    metrics.csv, and testB's summary gives ``fp_rate`` and ``mean_area`` instead of the five means. val
    also takes the images test.py's decision ``rule`` chose on, so its figures before and after cover
    the same images.
    """
    start = time.perf_counter()
    masks = refine_ungated([(item.image, item.prob) for item in items], [item.gated for item in items],
                           lambda todo: refine_many(todo, params, opt.num_workers, desc=f'CRF {split}'))
    seconds = time.perf_counter() - start
    out_dir = split_folder(run, 'crf', split)
    scores = SegmentationScores(surface=True)
    for item, mask in zip(items, masks):
        gt = read_mask(item.label) if item.label else None
        write_png_atomic(image_path(out_dir, 'masks', item.name), mask.astype(np.uint8) * 255)
        write_png_atomic(image_path(out_dir, 'overlays', item.name),
                         draw_overlay(read_image(item.image), mask, gt))
        scores.add(item.name, mask, np.zeros_like(mask) if gt is None else gt)
    write_metrics_csv(metrics_path(out_dir), scores.rows())
    if split == 'testB':
        figures = {'n_images': len(items), **_detection(masks)}
    else:
        figures = scores.summary()
    summary = {**figures, 'before': _before(run, split, items), 'selection': selection,
               'images_per_second': len(items) / max(seconds, 1e-9), 'command': opt.command_line}
    write_json_atomic(summary_path(out_dir), summary)
    return summary


def splits_to_refine(opt, run):
    """--splits, with val first whenever test.py wrote its maps: the console table and the report then show
    val's figures before and after the CRF beside the test splits'."""
    has_val = os.path.isdir(image_folder(split_folder(run, 'test', 'val'), 'prob'))
    return (['val'] if has_val else []) + [split for split in opt.splits if split != 'val']


def format_table(summaries):
    """Before/after lines per split: JA DI AC SE SP (labelled) or fp_rate mean_area (testB)."""
    lines = [f'{"split":<7}{"":<8}{"n":>5}  ' + ' '.join(f'{k:>7}' for k in SCORE_NAMES)]
    for split, summary in summaries.items():
        keys = DETECTION_NAMES if split == 'testB' else SCORE_NAMES
        for when, values in (('before', summary['before']), ('after', summary)):
            cells = ' '.join(f'{k}={values[k]:.4f}' if split == 'testB' else f'{values[k]:>7.4f}' for k in keys)
            lines.append(f'{split:<7}{when:<8}{summary["n_images"]:>5}  {cells}')
    return '\n'.join(lines)


def main(argv=None):
    """Parse ``argv`` (default sys.argv[1:]) and refine the run's maps, holding the run folder; returns the
    summaries of the splits."""
    opt = CRFOptions().parse(argv)
    run = run_dir(opt)
    check_output_dir(stage_folder(run, 'crf'))
    with RunLock(run, 'crf.py'), exit_on_full_disk('run crf.py again'):
        return refine_run(opt, run)


def refine_run(opt, run):
    """Choose the CRF parameters, refine and score each split of ``run``; returns their summaries."""
    for split in opt.splits:
        _require_probs(opt, run, split)
    rule = read_test_selection(test_record_path(run), _test_hint(opt))
    print(format_options(opt))
    try:
        # Every split's files are checked before anything is written: bad input leaves earlier outputs as they were.
        items = {split: split_items(opt, run, split, rule if split == 'val' else None)
                 for split in splits_to_refine(opt, run)}
        params, selection = choose_params(opt, run, rule)
        write_record(crf_record_path(run), {'selection': selection,
                                            'test_record_sha256': file_sha256(test_record_path(run))},
                     opt.command_line)
        print(f"CRF parameters ({selection['chosen_on']}): {params.as_dict()}"
              + (f"; val DI {selection['val_DI_before']:.4f} -> {selection['val_DI_after']:.4f}"
                 if selection['val_DI_after'] is not None else ''))
        summaries = {split: refine_split(opt, run, split, split_list, params, selection)
                     for split, split_list in items.items()}
    except LayoutError as err:
        hint = '\n(use --skip_bad_images True to go on without the listed files)' if err.skippable else ''
        raise SystemExit(f'error: {err}{hint}') from None
    except ValueError as err:
        raise SystemExit(f'error: {err}') from None
    print(format_table(summaries))
    report = write_run_report(run)
    speed = np.mean([s['images_per_second'] for s in summaries.values()])
    print(f'CRF outputs in {stage_folder(run, "crf")}/<split>/ (masks, overlays, metrics.csv, summary.json); '
          f'{speed:.1f} images/s with {opt.num_workers} workers')
    print(f'report updated with the CRF results: {report}')
    return summaries


if __name__ == '__main__':
    main()
