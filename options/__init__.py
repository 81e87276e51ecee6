"""Command-line options: base_options (shared), train_options, test_options, crf_options, pseudo_options."""


def script_options():
    """The option classes of train.py, test.py, crf.py and pseudo.py (one shared argument list)."""
    from .crf_options import CRFOptions
    from .pseudo_options import PseudoOptions
    from .test_options import TestOptions
    from .train_options import TrainOptions
    return TrainOptions, TestOptions, CRFOptions, PseudoOptions
