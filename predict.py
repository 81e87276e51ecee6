"""Apply a weights file to your own images and NIfTI volumes; no labels, no dataset layout.

    python predict.py --weights weights/ISIC.pt --input photos/ --output masks/
    python predict.py --weights weights/BraTS.pt --input BraTS2021/ --output masks/ [--labels BraTS2021/]

Images get <name>_mask.png at their original size, volumes <name>_mask.nii.gz in their own voxel grid;
OUTPUT/predictions.csv has a row per file, OUTPUT/predictions_summary.json the counts and mean scores.
Ctrl-C stops cleanly and the same command continues (OUTPUT/predict_manifest.jsonl records what is done).
``python predict.py --help`` explains every flag.
"""
import contextlib
import os
import signal
import sys
from warnings import catch_warnings, simplefilter

from util.shutdown import CTRL_C_STATUS, exit_quietly_on_ctrl_c

exit_quietly_on_ctrl_c(__name__)  # before the slow imports below (torch: seconds)

import nibabel as nib
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.brats import enough_brain, normalise, slice_image, slice_to_volume
from data.image_io import non_finite_pixels, read_mask, write_png_atomic
from data.input_check import check_image, check_volume, non_finite_warnings, profile
from data.labeled_dataset import LabeledDataset, collate_labeled, network_input
from data.layout import header_size
from data.nifti_io import VolumeError, open_volume, read_volume, to_input_grid, voxel_ml, write_volume
from data.predict_inputs import find_inputs, find_labels, size_problem
from models.weights_file import build_model, check_dataset, read_state, stored_selection
from options.predict_options import parse
from refinement.crf_utils import CRFParams, crf_pool
from util.full_disk import exit_on_full_disk
from util.hardware import apply_hardware_options
from evaluation.inference import available_map_modes
from evaluation.metrics import SegmentationScores
from reporting.overlay import draw_overlay
from evaluation.postprocess import largest_component
from records.predict_manifest import MANIFEST, Manifest, file_key
from reporting.prediction_table import SUMMARY, write_predictions
from refinement.predictor import Predictor
from util.preflight import check_output_dir
from util.progress import progress_bar
from records.record_io import file_sha256

SKIP_HINT = '--skip_bad_images True goes on without such files'
RERUN = 'run the same command again: the files already done are skipped'


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def planned_outputs(item, opt):
    """The files predict.py writes for ``item`` with these flags."""
    kinds = ['mask'] + ['prob'] * opt.save_prob + ['overlay'] * (opt.save_overlay and item.kind == 'image')
    return [item.output(opt.output, what) for what in kinds]


def check_outputs(opt, inputs, manifest, keys):
    """Exit with one line, before any work, when --output lies inside --input, cannot be written, or holds an
    output of this run that this command did not make from the same input, weights and flags (unless
    --overwrite); its own finished or half-written outputs are what a rerun continues from."""
    if os.path.isdir(opt.input) and _inside(opt.output, opt.input):
        raise SystemExit(f'error: --output {opt.output} is inside --input {opt.input}; predict.py never writes '
                         f'into its input: pass an --output folder elsewhere')
    if os.path.exists(opt.output) and not os.path.isdir(opt.output):
        raise SystemExit(f'error: --output {opt.output} is a file; pass a folder')
    check_output_dir(opt.output, flag='--output')
    if opt.overwrite:
        return
    states = {item.path: manifest.state(item.name, keys[item.path]) for item in inputs}
    existing = [(path, states[item.path]) for item in inputs if states[item.path] not in ('done', 'started')
                for path in planned_outputs(item, opt) if os.path.exists(path)]
    if not manifest.existed:
        existing += [(path, None) for path in (os.path.join(opt.output, name) for name in ('predictions.csv', SUMMARY))
                     if os.path.exists(path)]
    if existing:
        (path, state), more = existing[0], f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''
        why = (f', made from another input, weights file or --crf/--largest_3d/--min_brain_frac ({MANIFEST})'
               if state == 'other' else '')
        raise SystemExit(f'error: {path} exists{more}{why}; pass --overwrite True to replace it, or another --output')


@contextlib.contextmanager
def pil_pixel_limit(pixels):
    """PIL's decompression-bomb limit set to ``pixels`` (None: off) inside, then put back: --max_megapixels
    replaces it (PIL warns above its limit, refuses above twice it)."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, pixels
    try:
        with catch_warnings():
            simplefilter('ignore', Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _size(path, kind):
    """(H, W) of an image or (X, Y, Z) of a volume from its header, else a one-line problem (str)."""
    if kind == 'image':
        with pil_pixel_limit(None):  # a huge image is refused by size_problem, in its own words
            size, problem = header_size(path)
        return str(problem) if problem else size[::-1]
    try:
        return open_volume(path).shape[:3]
    except VolumeError as error:
        return str(error)


def check_inputs(inputs, labels, opt):
    """{input path: its row} for the files left out before any work: a header that cannot be read (exit
    instead unless --skip_bad_images) or a size over the bounds; exit when a label cannot be read or its size
    differs from its input's."""
    left_out = {}
    for item in inputs:
        size = _size(item.path, item.kind)
        if isinstance(size, str):
            left_out[item.path] = skipped_row(item, size, opt.skip_bad_images)
            continue
        problem = size_problem(item, size, opt)
        if problem:
            left_out[item.path] = refused_row(item, problem)
        elif item.path in labels:
            label_size = _size(labels[item.path], item.kind)
            if isinstance(label_size, str):
                raise SystemExit(f'error: label {label_size}')
            if label_size != size:
                raise SystemExit(f'error: label {labels[item.path]} is {label_size} but {item.path} is {size}; a '
                                 f'label must have its input\'s size')
    return left_out


def skipped_row(item, problem, skip_bad):
    """The predictions.csv row of a file left out for ``problem`` (one line); exit with it unless ``skip_bad``."""
    if not skip_bad:
        raise SystemExit(f'error: {problem} ({SKIP_HINT})')
    return {'file': item.path, 'kind': item.kind, 'status': f'skipped: {problem}'}


def refused_row(item, reason, warnings=()):
    """The predictions.csv row of a file predict.py will not predict, said on the console too."""
    tqdm.write(f'refused: {item.path}: {reason}', file=sys.stderr)
    return {'file': item.path, 'kind': item.kind, 'status': f'refused: {reason}', 'input_check': '; '.join(warnings)}


def input_verdict(item, opt, refusal, warnings):
    """None when ``item`` is predicted (its ``warnings`` said on the console), else its refused row."""
    if refusal:
        return refused_row(item, refusal, warnings)
    if warnings and opt.refuse_unexpected:
        return refused_row(item, f'unlike the weights\' training data (--refuse_unexpected True): {warnings[0]}',
                           warnings)
    for warning in warnings:
        tqdm.write(f'warning: {item.path}: {warning}', file=sys.stderr)
    return None


def stored_choices(opt, state):
    """(rule, CRFParams or None) stored in the weights file; None also with --crf False."""
    rule = stored_selection(state, opt.weights)
    if not opt.crf:
        return rule, None
    if not rule.get('crf'):
        print(f'note: {opt.weights} stores no CRF; masks are the stored threshold and post-processing alone')
        return rule, None
    return rule, CRFParams.from_dict(rule['crf'])


def _row(item, opt, mask, score, warnings, voxel=None):
    """predictions.csv row of one written mask, before any scores."""
    return {'file': item.path, 'kind': item.kind, 'status': 'ok', 'input_check': '; '.join(warnings),
            'mask': item.output(opt.output, 'mask'), 'lesion_score': score, 'lesion': int(mask.any()),
            'lesion_px': int(mask.sum()), 'lesion_fraction': float(mask.mean()),
            'lesion_ml': float(mask.sum() * voxel) if voxel else None}


def read_label(item, path):
    """A label (or a written mask) of ``item`` as a bool array: H x W, or X x Y x Z in its own voxel grid."""
    if item.kind == 'image':
        return read_mask(path)
    voxels = np.asarray(nib.load(path).dataobj)
    return voxels.reshape(voxels.shape[:3]) > 0


def scored(row, item, label_path, mask=None):
    """``row`` with JA DI AC SE SP of its mask (``mask``, else its written file) against ``label_path``."""
    if label_path is None or row['status'] != 'ok':
        return row
    mask = read_label(item, row['mask']) if mask is None else mask
    return {**row, **SegmentationScores().add(item.name, mask, read_label(item, label_path))}


class Job:
    """One run's fixed parts: flags, training-data profile, labels, manifest, file keys; and once built, the
    network and its predictor."""

    def __init__(self, opt, kind, labels, manifest, keys):
        self.opt, self.kind, self.labels, self.manifest, self.keys = opt, kind, labels, manifest, keys
        self.model = self.predictor = None

    def write(self, item, write_outputs, row, mask):
        """Write ``item``'s outputs between its manifest's ``started`` and ``done``; returns its scored row."""
        key = self.keys[item.path]
        self.manifest.start(item.name, key)
        write_outputs()
        self.manifest.finish(item.name, key, row)
        return scored(row, item, self.labels.get(item.path), mask)


def _checked_batch(batch, job, by_path):
    """(kept indices, rows of the refused) of a batch's readable images after their input check; the
    warnings of each kept one, by path."""
    keep, rows, warnings = [], [], {}
    for index, (path, raw) in enumerate(zip(batch['path'], batch['raw'])):
        refusal, found = check_image(raw.numpy(), job.kind, job.opt.allow_other_dataset)
        found += non_finite_warnings(non_finite_pixels(path), 'pixels')
        row = input_verdict(by_path[path], job.opt, refusal, found)
        if row:
            rows.append(row)
        else:
            keep.append(index)
            warnings[path] = found
    return keep, rows, warnings


def predict_images(items, job, bar):
    """Stream ``items`` (images) through the network, rule and CRF a batch at a time; yields their rows."""
    opt, by_path = job.opt, {item.path: item for item in items}
    dataset = LabeledDataset([(item.path, None) for item in items], job.model.opt.img_size, job.model.opt.img_ch,
                             report_unreadable=True)
    loader = DataLoader(dataset, batch_size=opt.batch_size, num_workers=opt.num_workers, collate_fn=collate_labeled)
    for batch in loader:
        for bad in batch['unreadable']:  # a file whose header read but whose pixels do not decode
            yield skipped_row(by_path[bad['path']], bad['unreadable'], opt.skip_bad_images)
            bar.update()
        if batch['image'] is None:
            continue
        keep, refused, warnings = _checked_batch(batch, job, by_path)
        yield from refused
        bar.update(len(refused))
        if not keep:
            continue
        raws = [batch['raw'][i].numpy() for i in keep]
        predictions = job.predictor.decide(batch['image'][keep], raws)
        job.predictor.refine(raws, predictions)
        for i, raw, prediction in zip(keep, raws, predictions):
            item = by_path[batch['path'][i]]
            row = _row(item, opt, prediction.mask, prediction.score, warnings[item.path])
            yield job.write(item, lambda: _write_image(item, opt, raw, prediction, job.labels), row, prediction.mask)
            bar.update()


def _write_image(item, opt, raw, prediction, labels):
    write_png_atomic(item.output(opt.output, 'mask'), prediction.mask.astype(np.uint8) * 255)
    if opt.save_prob:
        write_png_atomic(item.output(opt.output, 'prob'), np.round(prediction.prob * 65535).astype(np.uint16))
    if opt.save_overlay:
        gt = read_mask(labels[item.path]) if item.path in labels else None
        write_png_atomic(item.output(opt.output, 'overlay'), draw_overlay(raw, prediction.mask, gt))


def volume_predictions(voxels, job, name):
    """(mask, prob, [Prediction]) of a volume in BraTS's orientation: its slices holding enough brain predicted,
    the others empty."""
    opt, model = job.opt, job.model
    scaled = normalise(voxels)
    slices = np.flatnonzero(enough_brain(voxels, opt.min_brain_frac))
    raws = [slice_image(scaled, z) for z in slices]
    predictions = []
    for start in progress_bar(range(0, len(raws), opt.batch_size), desc=name, unit='batch'):
        chunk = raws[start:start + opt.batch_size]
        images = torch.stack([network_input(raw, model.opt.img_size, model.opt.img_ch) for raw in chunk])
        predictions += job.predictor.decide(images, chunk)
    job.predictor.refine(raws, predictions)
    mask, prob = np.zeros(scaled.shape, bool), np.zeros(scaled.shape, np.float32)
    for z, prediction in zip(slices, predictions):
        mask[:, :, z] = slice_to_volume(prediction.mask, scaled.shape[:2])
        prob[:, :, z] = slice_to_volume(prediction.prob, scaled.shape[:2])
    if opt.largest_3d:
        mask = largest_component(mask)
    return mask, prob, predictions


def predict_volume(item, job):
    """Check and predict one volume, write its mask (and map) in its own voxel grid; returns its row."""
    opt = job.opt
    image = open_volume(item.path)
    voxels, non_finite = read_volume(image)
    warnings = check_volume(voxels, job.kind) + non_finite_warnings(non_finite, 'voxels')
    refused = input_verdict(item, opt, None, warnings)
    if refused:
        return refused
    mask, prob, predictions = volume_predictions(voxels, job, os.path.basename(item.path))
    mask = to_input_grid(mask, image)

    def write_outputs():
        write_volume(item.output(opt.output, 'mask'), mask.astype(np.uint8), image)
        if opt.save_prob:
            write_volume(item.output(opt.output, 'prob'), to_input_grid(prob, image), image)
    scores = [p.score for p in predictions if p.score is not None]
    row = _row(item, opt, mask, max(scores) if scores else None, warnings, voxel=voxel_ml(image))
    return job.write(item, write_outputs, row, mask)


def check_volumes_allowed(state, inputs, opt):
    """Refuse NIfTI volumes for weights trained on another released dataset, naming the first volume."""
    volumes = [item.path for item in inputs if item.kind == 'volume']
    if volumes:
        more = f' and {len(volumes) - 1} more volumes' if len(volumes) > 1 else ''
        check_dataset(state, 'BraTS', f'{opt.weights} (given the NIfTI volume {volumes[0]}{more})',
                      opt.allow_other_dataset)


def find_some_labels(inputs, opt):
    """{input path: label path} of the inputs with a label in --labels; the others are listed on the console."""
    if not opt.labels:
        return {}
    labels = find_labels(inputs, opt.labels)
    missing = [item.path for item in inputs if item.path not in labels]
    if missing:
        more = f' and {len(missing) - 3} more' if len(missing) > 3 else ''
        print(f'note: {len(missing)} of {len(inputs)} inputs have no label in {opt.labels} (their rows are not '
              f'scored): {", ".join(missing[:3])}{more}')
    return labels


def input_keys(inputs, opt):
    """{input path: what its outputs are made from (records.predict_manifest.file_key), None if unreadable}."""
    weights = file_sha256(opt.weights)
    keys = {}
    for item in progress_bar(inputs, desc='digest', unit='file'):
        try:
            keys[item.path] = file_key(file_sha256(item.path), weights, opt)
        except OSError:
            keys[item.path] = None
    return keys


def finished_rows(inputs, opt, manifest, keys, labels):
    """{input path: its scored row} of the files a rerun need not predict again: recorded as done from the
    same input, weights and flags, every output present."""
    if opt.overwrite:
        return {}
    done = {}
    for item in inputs:
        row = manifest.done_row(item.name, keys[item.path])
        if row and all(os.path.exists(path) for path in planned_outputs(item, opt)):
            row = {**row, 'file': item.path, 'mask': item.output(opt.output, 'mask')}  # --input given otherwise
            done[item.path] = scored(row, item, labels.get(item.path))
    if done:
        print(f'{len(done)} of {len(inputs)} files already done ({os.path.join(opt.output, MANIFEST)}); not '
              f'predicted again (--overwrite True redoes them)')
    return done


def predict_all(job, state, choices, todo, rows):
    """Predict ``todo`` appending each row to ``rows`` as it is done."""
    opt, (rule, crf) = job.opt, choices
    # The pool forks before the model exists, so its workers do not hold the model's memory.
    with crf_pool(opt.crf_workers if crf else 0) or contextlib.nullcontext() as pool:
        # Only the stage giving the map runs: its image-level score is the one test.py chose the gate on.
        model = build_model(opt, state, opt.weights, serve_map=rule['map_mode'])
        if rule['map_mode'] not in available_map_modes(model.map_modes):
            raise SystemExit(f"error: {opt.weights} stores map {rule['map_mode']!r}, which its model does not give "
                             f"({', '.join(available_map_modes(model.map_modes))}); export it again")
        job.model, job.predictor = model, Predictor(model, rule, crf, pool)
        images = [item for item in todo if item.kind == 'image']
        with progress_bar(total=len(todo), desc='predict', unit='file', leave=True) as bar:
            for row in predict_images(images, job, bar) if images else ():
                rows.append(row)
            for item in (item for item in todo if item.kind == 'volume'):
                try:
                    rows.append(predict_volume(item, job))
                except VolumeError as error:  # a header that read, voxels that do not
                    rows.append(skipped_row(item, str(error), opt.skip_bad_images))
                bar.update()


def run(opt, table):
    """Everything after parsing; ``table`` gets ``inputs`` and ``rows`` once outputs may be written."""
    state = read_state(opt.weights)
    choices = stored_choices(opt, state)  # a file without stored choices is refused before any work
    inputs = find_inputs(opt.input, opt.recursive)
    check_volumes_allowed(state, inputs, opt)
    labels = find_some_labels(inputs, opt)
    manifest = Manifest(opt.output, fresh=opt.overwrite)
    keys = input_keys(inputs, opt)
    check_outputs(opt, inputs, manifest, keys)
    left_out = check_inputs(inputs, labels, opt)
    done = finished_rows([item for item in inputs if item.path not in left_out], opt, manifest, keys, labels)
    rows = [*left_out.values(), *done.values()]
    table.update(inputs=inputs, rows=rows)
    todo = [item for item in inputs if item.path not in left_out and item.path not in done]
    if todo:
        predict_all(Job(opt, profile(state), labels, manifest, keys), state, choices, todo, rows)
    return write_table(opt, table)


def write_table(opt, table):
    """Write predictions.csv (rows in --input's order) and its summary; print the summary; return the rows."""
    order = {item.path: index for index, item in enumerate(table['inputs'])}
    rows = sorted(table['rows'], key=lambda row: order[row['file']])
    print(write_predictions(os.path.join(opt.output, 'predictions.csv'), rows, scored=bool(opt.labels),
                            files=len(order)))
    return rows


def main(argv=None):
    """Parse ``argv`` (default sys.argv[1:]), predict every input, write predictions.csv; Ctrl-C writes the
    table of the files done and exits with status 130."""
    opt = parse(argv)
    apply_hardware_options(opt)
    table = {}
    with exit_on_full_disk(RERUN), pil_pixel_limit(int(opt.max_megapixels * 1e6)):
        try:
            return run(opt, table)
        except KeyboardInterrupt:
            if table:
                write_table(opt, table)
            print(f'predict.py: stopped by Ctrl-C after {len(table.get("rows", []))} of '
                  f'{len(table.get("inputs", [])) or "?"} files; every file written is complete; {RERUN}',
                  file=sys.stderr)
            raise SystemExit(CTRL_C_STATUS) from None


if __name__ == '__main__':
    signal.signal(signal.SIGINT, signal.default_int_handler)  # main() stops cleanly on the KeyboardInterrupt
    main()
