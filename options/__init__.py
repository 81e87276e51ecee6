"""Command-line options: base_options (shared), train_options, test_options, crf_options, pseudo_options;
model_flags asks the models for theirs."""
import functools


def script_options():
    """The option classes of train.py, test.py, crf.py and pseudo.py (one shared argument list)."""
    from .crf_options import CRFOptions
    from .pseudo_options import PseudoOptions
    from .test_options import TestOptions
    from .train_options import TrainOptions
    return TrainOptions, TestOptions, CRFOptions, PseudoOptions


@functools.cache
def script_flags(options_class):
    """(option strings, dest, takes a value) of each flag of ``options_class``'s own parser, built once per
    process: what the other scripts accept and drop (one shared argument list), and what a recipe may set."""
    parser = options_class().build_parser(accept_others=False)
    return tuple((tuple(action.option_strings), action.dest, action.nargs != 0)
                 for action in parser._actions if action.option_strings)
