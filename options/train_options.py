"""Training flags (train.py): schedule, loss weights, logging and visdom."""
from .base_options import LOSS_WEIGHTS, BaseOptions, str2bool


class TrainOptions(BaseOptions):
    description = 'Train CLTNet on two folders of weakly labelled images (A: lesion, B: normal).'
    is_train = True
    preset_keys = BaseOptions.preset_keys + ('iteration', 'batch_size')

    def add_arguments(self, parser):
        g = parser.add_argument_group('schedule')
        g.add_argument('--iteration', type=int, default=None, help='number of training iterations (steps)')
        g.add_argument('--lr', type=float, default=1e-4, help='Adam learning rate')
        g.add_argument('--weight_decay', type=float, default=2e-5, help='Adam weight decay')
        g.add_argument('--decay_flag', type=str2bool, default=True,
                       help='True: decay the learning rate linearly to 0 over the second half')
        g.add_argument('--resume', type=str2bool, default=False,
                       help='True: continue from the latest checkpoint of this run at the next step')
        g = parser.add_argument_group('loss weights (default: the original per-dataset values)')
        g.add_argument('--adv_weight', type=float, default=None, help='least-squares adversarial losses')
        g.add_argument('--cycle_weight', type=float, default=None, help='cycle-consistency L1')
        g.add_argument('--identity_weight', type=float, default=None, help='identity L1')
        g.add_argument('--cam_weight', type=float, default=None, help='CAM classification BCE of the generators')
        g.add_argument('--recon_weight', type=float, default=None, help='L1 of the reconstruction branch')
        g.add_argument('--mask_weight', type=float, default=0.0,
                       help='L1 on the mean attention mask of normal (B) images fed to the A->B generator: '
                            'a normal image needs no lesion to be removed')
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
        g.add_argument('--display_env', default=None, help='visdom environment (default: the run name)')

    def preset_extras(self, first):
        return dict(LOSS_WEIGHTS.get(first.dataset, LOSS_WEIGHTS['BraTS']))

    def validate(self, parser, opt):
        for flag in ('iteration', 'batch_size', 'print_freq', 'display_freq', 'save_freq'):
            if getattr(opt, flag) < 1:
                parser.error(f'--{flag} must be at least 1, got {getattr(opt, flag)}')
        if opt.display_env is None:
            opt.display_env = opt.name
