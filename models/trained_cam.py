"""The trained CAM that PSA and IRN start from: the file a flag names, checked, and its classifier rebuilt frozen.

Both methods make their training labels from a CAM trained before them (a ``--model cam`` run) and walk its
map at test time, so the file is an input of their training, named by a flag of each model.
"""
import os

from .base_model import _unwrap, set_requires_grad
from .weights_file import build_model, read_state, serving_state

CAM_FILE_HELP = ('pass a checkpoint of a --model cam run (<run>/checkpoints/iter_*.pt, trained with train.py '
                 '--model cam) or an exported cam weights file')


def trained_cam_state(path, flag, model):
    """The state of the CAM in ``path`` (a cam checkpoint, weights file or the cam stage of a two-stage file),
    which ``--model model`` reads through ``flag``; exits with one line naming the file and the fix."""
    if not path:
        raise SystemExit(f'error: --model {model} needs {flag} FILE: {CAM_FILE_HELP}')
    if not os.path.isfile(path):
        raise SystemExit(f'error: {flag} {path} not found; {CAM_FILE_HELP}')
    state = serving_state(read_state(path), 'cam')
    found = state['architecture'].get('model')
    if found != 'cam':
        raise SystemExit(f'error: {flag} {path} holds a --model {found} file, not a CAM; {CAM_FILE_HELP}')
    return state


def frozen_classifier(options, state, path):
    """The classifier of a CAM ``state`` (from ``path``) built with ``options``, in eval mode, every weight frozen."""
    classifier = _unwrap(build_model(options, state, path).classifier)
    set_requires_grad([classifier], False)
    return classifier.eval()
