"""crf.py flags: which splits to refine, fixed CRF parameters, worker processes."""
import os

from refinement.crf_utils import CRFParams, parse_crf_params
from evaluation.postprocess import POSTPROCESSING

from .base_options import BaseOptions, str2bool

SPLITS = ('val', 'testA', 'testB')


class CRFOptions(BaseOptions):
    runs_a_model = False  # it reads test.py's maps
    description = ("Refine test.py's lesion probability maps with a dense CRF. Its parameters are chosen "
                   "on val (mean DI over a small grid) and applied unchanged to the other splits.")

    def add_arguments(self, parser):
        g = parser.add_argument_group('CRF')
        defaults = ','.join(f'{k}={v:g}' if isinstance(v, (int, float)) else f'{k}={v}'
                            for k, v in CRFParams().as_dict().items())
        g.add_argument('--crf_params', default=None,
                       help=f'fixed CRF parameters as key=value pairs, e.g. "alpha=2,sxy=40"; the others keep '
                            f'their defaults ({defaults}). Skips the val search. sxy and gauss_sxy are in '
                            f'pixels of a 256-px image (a larger image is refined shrunk to 256 px, a smaller '
                            f'one with the widths scaled to its size); colour is the weight of '
                            f"the image's own lesion/skin colour model added to the map first; postprocess "
                            f"cleans the CRF's mask ({', '.join(POSTPROCESSING)})")
        g.add_argument('--splits', default='testA,testB',
                       help='comma-separated splits to refine (val, testA, testB); val is always refined, '
                            'scored and shown when test.py wrote its maps')
        g.add_argument('--weights', default=None,
                       help="released generator weights, as given to test.py; crf.py reads test.py's "
                            'outputs and only repeats this path in its hints')
        g.add_argument('--rechoose', type=str2bool, default=False,
                       help="True: search the CRF on val even when test.py served the choices stored in a "
                            "weights file (whose stored CRF is applied otherwise)")
        # All cores by default: every image's CRF is independent (the base help speaks of data loading).
        workers = parser._option_string_actions['--num_workers']
        workers.default = os.cpu_count() or 1
        workers.help = 'CRF worker processes, one image each at a time (0 or 1 = main process)'

    def validate(self, parser, opt):
        splits = [s.strip() for s in opt.splits.split(',') if s.strip()]
        unknown = [s for s in splits if s not in SPLITS]
        if not splits or unknown:
            parser.error(f'--splits takes a comma-separated subset of {",".join(SPLITS)}, got {opt.splits!r}')
        opt.splits = list(dict.fromkeys(splits))
        parse_crf_params_flag(parser, opt)


def parse_crf_params_flag(parser, opt):
    """Turn ``opt.crf_params`` text into CRFParams in place (None stays None); parser error if malformed."""
    if opt.crf_params is not None:
        try:
            opt.crf_params = parse_crf_params(opt.crf_params)
        except ValueError as err:
            parser.error(f'--crf_params: {err}')
