"""Export a run's val-chosen generator as a small released-weights file.

    python tools/export_weights.py --run results/ISIC/isic_1/cltnet --out weights/ISIC.pt

Reads what test.py (``test/selection.json``) and crf.py (``crf/testA/summary.json``, optional) chose
on val, and stores the A->B generator of the chosen checkpoint in half precision together with those
choices, the image size and the training options, so ``test.py --weights`` and ``crf.py`` can use
it on data that has no val split.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.base_model import CHECKPOINT_FORMAT, atomic_torch_save  # noqa: E402


def _read_json(path, what):
    if not os.path.isfile(path):
        raise SystemExit(f'error: {path} not found: {what}')
    with open(path) as handle:
        return json.load(handle)


def export(run, out):
    """Write the weights file ``out`` for run folder ``run``; returns its selection dict."""
    selection = _read_json(os.path.join(run, 'test', 'selection.json'), 'run test.py on this run first')['selection']
    crf_summary = os.path.join(run, 'crf', 'testA', 'summary.json')
    if os.path.isfile(crf_summary):
        selection['crf'] = _read_json(crf_summary, '')['selection']['crf']
    selection.pop('ranking', None)
    state = torch.load(selection['checkpoint'], map_location='cpu', weights_only=False)
    if state.get('format') != CHECKPOINT_FORMAT:
        raise SystemExit(f"error: {selection['checkpoint']} is not a CLTNet-Seg checkpoint")
    generator = {k: v.half() if v.is_floating_point() else v for k, v in state['nets']['G_AB'].items()}
    selection['checkpoint'] = os.path.basename(selection['checkpoint'])
    atomic_torch_save({'format': CHECKPOINT_FORMAT, 'kind': 'released-weights',
                       'architecture': state['architecture'], 'nets': {'G_AB': generator},
                       'step': state['step'], 'selection': selection, 'options': state['options']}, out)
    return selection


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--run', required=True, help='run folder: <result_dir>/<dataset>/<folder>/<name>')
    parser.add_argument('--out', required=True, help='weights file to write (e.g. weights/ISIC.pt)')
    args = parser.parse_args(argv)
    selection = export(args.run, args.out)
    size_mb = os.path.getsize(args.out) / 2 ** 20
    print(f"wrote {args.out} ({size_mb:.1f} MB): step {selection['step']}, map {selection['map_mode']}, "
          f"{selection['binarize']} threshold {selection['threshold']}, post-processing {selection['postprocess']}"
          + (f", CRF {selection['crf']}" if 'crf' in selection else ''))


if __name__ == '__main__':
    main()
