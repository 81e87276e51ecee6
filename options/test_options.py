"""Inference flags (test.py): which checkpoints, how lesion maps become masks, which splits."""
from models import all_map_modes
from evaluation.inference import available_map_modes

from .base_options import BaseOptions, add_inference_batch_size, str2bool
from .model_flags import map_mode_help


class TestOptions(BaseOptions):
    description = ('Extract lesion maps with a trained CLTNet, choose checkpoint, map mode, threshold and '
                   'post-processing on val (and, for a stage-2 run trained with --hold_out_normals, an '
                   'image-level gate on val plus those normal images), apply them to the test splits and '
                   'score JA/DI/AC/SE/SP.')

    def add_arguments(self, parser):
        g = parser.add_argument_group('what to test')
        g.add_argument('--weights', default=None,
                       help="released weights file (weights/ISIC.pt) to use instead of the run's checkpoints; "
                            'the choices it stores (map, threshold, post-processing, gate, CRF) are applied '
                            'unchanged, as predict.py does, unless --rechoose True; a file without stored choices '
                            '(a training checkpoint) is chosen on val')
        g.add_argument('--rechoose', type=str2bool, default=False,
                       help='True: choose map, threshold, post-processing and gate on val even when --weights '
                            'stores its choices (what pipeline.py does with the files it makes); crf.py then '
                            'searches its CRF on val too')
        add_inference_batch_size(g)
        g.add_argument('--allow_other_dataset', type=str2bool, default=False,
                       help='True: apply --weights trained on ISIC to BraTS or the reverse (refused otherwise); '
                            'weights applied to a dataset of any other name only get a note')
        g.add_argument('--which_iter', default='all',
                       help="checkpoints scored on val: 'all', 'latest', or a step number")
        g.add_argument('--map_mode', default='auto', help=map_mode_help())
        g.add_argument('--select_few', default='',
                       help='also choose on the labelled images of few_sample/FOLDER (e.g. stage2_50): more '
                            'images to choose on than val alone, for a model that never learned their labels '
                            '(refused when it trained on them, --few_sample). Default: the folder the run held '
                            'out of training (train.py --select_few), else val alone')
        g.add_argument('--splits', default='testA,testB',
                       help='comma-separated splits to predict with the val-chosen rule (val is always done '
                            'when present, since selection and crf.py need it)')
        g.add_argument('--reselect', action='store_true',
                       help='choose again on val even when test/selection.json already records the decision for '
                            'these checkpoints (a changed decision is reported when it is recorded)')

    def validate(self, parser, opt):
        if opt.which_iter not in ('all', 'latest') and not opt.which_iter.isdigit():
            parser.error(f"--which_iter must be 'all', 'latest' or a step number, got {opt.which_iter!r}")
        opt.splits = [s for s in opt.splits.split(',') if s]
        modes = ('auto',) + available_map_modes(all_map_modes())
        if opt.map_mode not in modes:
            parser.error(f"--map_mode must be one of {', '.join(modes)}, got {opt.map_mode!r}")
