"""pseudo.py flags: the weights to fall back on, the CRF and the confidence band (the rule itself is test.py's
recorded decision, so none of test.py's choosing flags)."""
import os

from .base_options import BaseOptions, add_inference_batch_size, check_ranges
from .crf_options import parse_crf_params_flag


class PseudoOptions(BaseOptions):
    description = ('Write stage-1 pseudo-masks (val-chosen rule + dense CRF) with a per-pixel confidence for '
                   'every training image, for stage 2 (train.py --stage 2 --pseudo NAME).')

    def add_arguments(self, parser):
        g = parser.add_argument_group('pseudo-masks')
        g.add_argument('--weights', default=None,
                       help="released weights file (weights/ISIC.pt) whose stored rule and CRF parameters to use "
                            "when this run has no test.py record (test/selection.json)")
        add_inference_batch_size(g)
        g.add_argument('--crf_params', default=None,
                       help='CRF parameters as key=value pairs (e.g. "alpha=2,sxy=40"); default: the ones val '
                            "chose (crf.py's choice for this run, or those stored in --weights)")
        g.add_argument('--crf_workers', type=int, default=os.cpu_count() or 1,
                       help='CRF worker processes (0 or 1 = main process)')
        g.add_argument('--boundary_band', type=float, default=0.04,
                       help='width of the uncertain band around each pseudo-mask boundary, as a fraction of the '
                            "image side: confidence rises from 0 at the boundary to 1 at this distance")

    def validate(self, parser, opt):
        if not 0 < opt.boundary_band <= 1:
            parser.error(f'--boundary_band must be in (0, 1], got {opt.boundary_band}')
        check_ranges(parser, opt, crf_workers=(0, None))
        parse_crf_params_flag(parser, opt)
