"""Training flags (train.py): schedule, stage 2, logging and visdom; each model's own flags (CLTNet's network
shape and loss weights) and defaults (per dataset, stage 2's) come from its file (model_flags)."""
import argparse
import re

import torch

from models import model_classes
from models.backbone import ENCODERS

from .base_options import BaseOptions, check_ranges, check_run_name, str2bool
from .model_flags import add_model_flags, dataset_default_keys, dataset_default_texts, dataset_defaults, stage2_defaults

FLOAT32_MAX = torch.finfo(torch.float32).max
# Sanity bounds far above any setting used (paper: ch 54, n_res 4, batch 1, 7000 steps): a typo such as an extra
# zero then stops at parse time instead of in an out-of-memory traceback or a run of years.
SIZE_BOUNDS = dict(ch=(1, 512), n_res=(1, 64), batch_size=(1, 1024), iteration=(1, 10_000_000))


def parse_side_range(text):
    """'72,144' -> (72, 144): two whole pixel sides, the first at most the second."""
    try:
        low, high = (int(part) for part in str(text).split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected two whole numbers as SMALLEST,LARGEST, got {text!r}') from None
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f'expected 1 <= SMALLEST <= LARGEST, got {text!r}')
    return low, high


def add_schedule_arguments(parser):
    """The schedule group: steps, batch, optimiser, augmentation, resuming; returned for the models' flags."""
    g = parser.add_argument_group('schedule')
    g.add_argument('--iteration', type=int, default=None, help='number of training iterations (steps)')
    g.add_argument('--batch_size', type=int, default=None,
                   help='images per domain per step, per process under torchrun')
    g.add_argument('--lr', type=float, default=1e-4, help='Adam learning rate')
    g.add_argument('--weight_decay', type=float, default=2e-5, help='Adam weight decay')
    g.add_argument('--jitter', type=float, default=0.1,
                   help='augmentation: brightness and contrast factors drawn from 1 +- jitter per image; larger '
                        'values help when lesion intensity varies between patients or scanners')
    g.add_argument('--rot90', type=str2bool, default=False,
                   help='augmentation: True also turns each image by a random multiple of 90 degrees (with '
                        'the flips: all 8 symmetries of the square), for images without a preferred '
                        'orientation such as dermoscopy')
    g.add_argument('--degrade_A', type=float, default=0.0,
                   help='stage 1: probability that a lesion (A) image is shrunk to a random side of '
                        '--degrade_range and enlarged back before augmentation. Where the normal images '
                        'are small patches upsampled (ISIC), sharpness alone tells A from B; this takes '
                        'that shortcut away so the networks must find the lesion. 0: off')
    g.add_argument('--degrade_range', type=parse_side_range, default='72,144',
                   help='smallest,largest side of that shrink, in pixels of a 256-px image (ISIC normal '
                        'patches were cut at 72-144 px)')
    g.add_argument('--decay_flag', type=str2bool, default=True,
                   help='True: decay the learning rate linearly to 0 over the second half')
    g.add_argument('--resume', type=str2bool, default=False,
                   help='True: continue from the latest checkpoint of this run at the next step')
    g.add_argument('--overwrite', type=str2bool, default=False,
                   help="True: start again from step 1 in a run folder that holds an earlier run's "
                        'checkpoints, deleting them, its loss_log.csv and samples/ first (its test/, crf/ '
                        'and pseudo/ outputs stay until those scripts run again). Without it such a '
                        'fresh run is refused')
    return g


def add_stage2_arguments(parser):
    """Stage 2's training set: pseudo-masks, few-shot images, held-out images; the encoder."""
    g = parser.add_argument_group('stage 2: segmentation network on stage-1 pseudo-masks (see pseudo.py)')
    g.add_argument('--stage', type=int, default=1, choices=(1, 2),
                   help='1: train CLTNet on the weak labels; 2: train --model seg on the pseudo-masks of the '
                        'stage-1 run --pseudo, with defaults of its own for '
                        + ', '.join('--' + key for key in stage2_defaults()))
    g.add_argument('--pseudo', default='cltnet',
                   help='stage 2: name of the stage-1 run whose pseudo/ folder (written by pseudo.py) to train on')
    g.add_argument('--min_confidence', type=float, default=0.5,
                   help='stage 2: pseudo-mask pixels with a lower confidence are left out of the loss')
    g.add_argument('--few_sample', default='',
                   help='stage 2: also train on the labelled images of few_sample/<NAME> (e.g. stage2_50); '
                        'their true masks replace their pseudo-masks; empty: none')
    g.add_argument('--select_few', default='',
                   help='stage 2: hold the labelled images of few_sample/<NAME> out of training and add them '
                        'to val, so test.py and crf.py choose checkpoint, rule and CRF on more images and '
                        'subjects than val alone (recorded in the checkpoints); empty: val alone')
    g.add_argument('--hold_out_normals', type=int, default=0,
                   help='stage 2: leave the last N normal images (by sorted file name) of <M>_B_weak out of '
                        'training, so test.py can choose an image-level gate (an empty mask for an image '
                        'whose lesion score is below a threshold) and crf.py its parameters on normal '
                        'images the network never saw (recorded in the checkpoints); 0: none')
    g.add_argument('--encoder', default='scratch', choices=ENCODERS,
                   help='stage 2 (--model seg), the CAM-family models and stage 1 (--model cltnet): scratch: the '
                        'network learns every weight from the training images; efficientnet-lite0: it stands on '
                        'ImageNet-pretrained EfficientNet-Lite0 features (weights inside the pip package, never '
                        'downloaded), with --ch the width of what is trained on top; CLTNet adds them, frozen, '
                        "to its generators' encoders (recorded in the checkpoints)")
    g.add_argument('--hold_out_group', default='',
                   help='stage 2, with --hold_out_normals N: hold out whole patients instead of the last N '
                        'names, so the gate is judged on patients never trained on: a regular expression whose '
                        'first group (else whole match) in a file name is its patient, e.g. "^(.*)_flair" for '
                        'BraTS slices; the last patients by sorted ID are held out until N images; empty: by name')
    g.add_argument('--few_weight', type=float, default=1.0,
                   help='stage 2: loss weight of each few-shot labelled pixel (pseudo-mask pixels weigh 1)')


def add_logging_arguments(parser):
    """Loss log, sample grids, checkpoints and visdom."""
    g = parser.add_argument_group('logging')
    g.add_argument('--print_freq', type=int, default=100,
                   help='steps between sample grids, visdom image updates and loss flushes')
    g.add_argument('--display_freq', type=int, default=10,
                   help='steps between loss_log.csv rows being written and visdom loss points '
                        '(under torchrun: the mean of the losses over all processes)')
    g.add_argument('--save_freq', type=int, default=500, help='steps between checkpoints')
    g.add_argument('--detect_anomaly', type=str2bool, default=False,
                   help='True: torch autograd anomaly detection (slow; for debugging NaNs)')
    g.add_argument('--display_id', type=int, default=1, help='visdom display id; 0 turns visdom off')
    g.add_argument('--display_server', default='http://localhost', help='visdom server address')
    g.add_argument('--display_port', type=int, default=8097, help='visdom server port')
    g.add_argument('--display_env', default=None,
                   help="visdom environment (default: DATASET_FOLDER_NAME, e.g. ISIC_isic_1_cltnet, so runs of "
                        "one name on other data keep their own plots)")


class TrainOptions(BaseOptions):
    description = 'Train CLTNet on two folders of weakly labelled images (A: lesion, B: normal).'
    is_train = True
    preset_keys = BaseOptions.preset_keys + ('ch', 'n_res', 'light', 'iteration', 'batch_size')
    image_group = 'network (stored in each checkpoint, which test.py and pseudo.py take it from)'

    def add_network_arguments(self, group):
        # The width every model takes; a model's own network flags come from its file (add_model_flags).
        group.add_argument('--ch', type=int, default=None, help='base channel number of generators and discriminators')

    def add_arguments(self, parser):
        network = next(group for group in parser._action_groups if group.title == self.image_group)
        schedule = add_schedule_arguments(parser)
        add_stage2_arguments(parser)
        add_model_flags(parser, {'network': network, 'schedule': schedule})
        add_logging_arguments(parser)

    def default_texts(self, parser):
        texts = {**super().default_texts(parser), **dataset_default_texts()}
        for key, value in stage2_defaults().items():
            texts[key] = f"{texts.get(key, parser.get_default(key))}; stage 2: {value}"
        return texts

    def filled_keys(self):
        return super().filled_keys() | set(stage2_defaults()) | dataset_default_keys()

    def chosen_defaults(self, opt, given):
        """The preset's, then stage 2's (the stage-2 model's) or in stage 1 every model's for ``opt.dataset``."""
        extras = stage2_defaults() if opt.stage == 2 else dataset_defaults(opt.dataset, given)
        return {**super().chosen_defaults(opt, given), **extras}

    def validate(self, parser, opt):
        if (opt.stage == 2) != (opt.model == 'seg'):
            parser.error('--model seg trains only in stage 2 (--stage 2), on pseudo-masks; stage 2 trains only '
                         f'--model seg (got --stage {opt.stage} --model {opt.model})')
        if not 0 <= opt.degrade_A <= 1:
            parser.error(f'--degrade_A is a probability in [0, 1], got {opt.degrade_A}')
        if not 0 <= opt.jitter < 1:
            parser.error(f'--jitter must be in [0, 1), got {opt.jitter}')
        if opt.select_few and opt.stage != 2:
            parser.error('--select_few holds labelled images out of stage-2 training; it needs --stage 2')
        if opt.select_few and opt.select_few == opt.few_sample:
            parser.error(f'--select_few {opt.select_few}: those images cannot be both trained on (--few_sample) '
                         'and held out to choose on')
        if opt.hold_out_normals < 0:
            parser.error(f'--hold_out_normals is a number of normal images, got {opt.hold_out_normals}')
        if opt.hold_out_group and not opt.hold_out_normals:
            parser.error('--hold_out_group names the patients of held-out normal images; it needs --hold_out_normals N')
        if opt.hold_out_group:
            try:
                re.compile(opt.hold_out_group)
            except re.error as error:
                parser.error(f'--hold_out_group {opt.hold_out_group!r} is not a regular expression ({error})')
        if opt.hold_out_normals and opt.stage != 2:
            parser.error('--hold_out_normals holds normal images out of stage-2 training; it needs --stage 2')
        if not 0 <= opt.min_confidence <= 1:
            parser.error(f'--min_confidence must be in [0, 1], got {opt.min_confidence}')
        if opt.resume and opt.overwrite:
            parser.error('--resume True continues the run, --overwrite True deletes it and starts again: pass one')
        check_run_name(parser, '--pseudo', opt.pseudo)
        check_ranges(parser, opt, iteration=(1, None), print_freq=(1, None), display_freq=(1, None),
                     save_freq=(1, None), weight_decay=(0, None), few_weight=(0, None), display_id=(0, None),
                     display_port=(1, 65535))
        for model_class in model_classes().values():
            check_ranges(parser, opt, **model_class.flag_ranges)
        check_ranges(parser, opt, **SIZE_BOUNDS)
        # The optimisers compute in float32: a larger learning rate fails inside the first step.
        if not 0 < opt.lr <= FLOAT32_MAX:
            parser.error(f'--lr must be positive and at most {FLOAT32_MAX:.4g} (float32), got {opt.lr}')
        if opt.display_env is None:
            opt.display_env = f'{opt.dataset}_{opt.folder}_{opt.name}'
