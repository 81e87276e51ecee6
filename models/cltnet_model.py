"""CLTNet: cycle-consistent lesion translation with CAM heads, attention masks and joint discrimination.

Domain A holds lesion images, domain B normal ones. ``G_AB`` removes lesions, ``G_BA`` adds them.
Each generator output is judged twice per discriminator: the translation itself and the composite
(translation inside the attention mask, input outside it), by a global and a local PatchGAN.
"""
import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

from .base_model import BaseModel, set_requires_grad
from .networks import CLTGenerator, Discriminator


def _lsgan(outputs, target):
    """Least-squares GAN loss over the patch logits and the CAM logits of one discriminator."""
    patches, cam_logit = outputs
    return F.mse_loss(patches.float(), torch.full_like(patches.float(), target)) + \
        F.mse_loss(cam_logit.float(), torch.full_like(cam_logit.float(), target))


def _bce(logit, target):
    return F.binary_cross_entropy_with_logits(logit.float(), torch.full_like(logit.float(), target))


# Loss weights of the original code, per dataset; the demo phantom (MRI-like) takes BraTS', and any other
# dataset too, with a note (a recipe names its weights).
LOSS_WEIGHTS = {
    'BraTS': dict(adv_weight=1, cycle_weight=10, identity_weight=10, cam_weight=1000, recon_weight=10),
    'ISIC': dict(adv_weight=1, cycle_weight=5, identity_weight=50, cam_weight=1400, recon_weight=10),
}
LOSS_WEIGHTS['demo'] = LOSS_WEIGHTS['BraTS']


def add_network_flags(group):
    """--n_res, --n_dis, --light: the shape of the generators and discriminators."""
    group.add_argument('--n_res', type=int, default=None,
                       help='residual blocks in the encoder and in each decoder branch')
    group.add_argument('--n_dis', type=int, default=6,
                       help='discriminator depth: the global one has n_dis+1 layers, the local one n_dis-1')
    group.add_argument('--light', type='bool', default=None,
                       help='True: the gamma/beta MLP pools the features first (the light U-GAT-IT)')


def add_step_flags(group):
    """--reuse_fakes, --recompute: how a training step runs (same losses)."""
    group.add_argument('--reuse_fakes', type='bool', default=True,
                       help="True: the discriminator step judges the generator step's (detached) fakes, so the "
                            "generators run once per step; False: it runs both generators again (without "
                            "gradients) for fresh fakes, as the original code did (slower, for comparison)")
    group.add_argument('--recompute', type='bool', default=False,
                       help="True: the generators keep only their blocks' inputs for the backward pass and run "
                            'each block again there (activation checkpointing): the same gradients; at the paper '
                            'setting on a 2-core CPU 3.7 instead of 6.3 GB peak memory for a 20%% slower step')


def add_loss_flags(parser):
    """The loss weights (per dataset: ``CLTNetModel.dataset_defaults``) and --mask_weight."""
    g = parser.add_argument_group("loss weights of stage 1 (the original code's, per dataset)")
    g.add_argument('--adv_weight', type=float, default=None, help='least-squares adversarial losses')
    g.add_argument('--cycle_weight', type=float, default=None, help='cycle-consistency L1')
    g.add_argument('--identity_weight', type=float, default=None, help='identity L1')
    g.add_argument('--cam_weight', type=float, default=None, help='CAM classification BCE of the generators')
    g.add_argument('--recon_weight', type=float, default=None, help='L1 of the reconstruction branch')
    g.add_argument('--mask_weight', type=float, default=0.0,
                   help='L1 on the mean attention mask of normal (B) images fed to the A->B generator: '
                        'a normal image needs no lesion to be removed')


class CLTNetModel(BaseModel):
    """Two generators, four discriminators (global + local per domain), trained jointly."""

    dataset_defaults = LOSS_WEIGHTS
    fallback_dataset = 'BraTS'
    dataset_defaults_name = 'loss weights'
    flag_ranges = {key: (0, None) for key in (*LOSS_WEIGHTS['BraTS'], 'mask_weight')}

    optional_architecture = {'encoder': 'scratch'}
    model_names = ['G_AB', 'G_BA', 'D_A_global', 'D_A_local', 'D_B_global', 'D_B_local']
    inference_nets = ['G_AB']
    loss_names = ['D_A', 'D_B', 'G_adv_A', 'G_adv_B', 'G_cycle', 'G_identity', 'G_cam', 'G_recon',
                  'G_mask', 'G_total']
    loss_groups = {'discriminators': ['D_A', 'D_B'],
                   'generator adversarial': ['G_adv_A', 'G_adv_B'],
                   'generator L1 and mask': ['G_cycle', 'G_identity', 'G_recon', 'G_mask'],
                   # Weighted by ~1000, the CAM loss would flatten every other curve of a shared plot.
                   'generator CAM': ['G_cam'],
                   'generator total': ['G_total']}
    visual_names = ['real_A', 'heatmap_A', 'fake_B', 'mask_A', 'composite_B', 'recon_A']

    def __init__(self, opt):
        super().__init__(opt)
        # ImageNet weights are loaded only to train: a saved file holds the (frozen) encoder too.
        gen = dict(img_ch=opt.img_ch, ch=opt.ch, n_res=opt.n_res, img_size=opt.img_size, light=opt.light,
                   encoder=getattr(opt, 'encoder', 'scratch'), pretrained=opt.is_train)
        self.G_AB = CLTGenerator(**gen)
        self.G_BA = CLTGenerator(**gen) if opt.is_train else None
        if opt.is_train:
            dis = dict(img_ch=opt.img_ch, ch=opt.ch, img_size=opt.img_size)
            self.D_A_global = Discriminator(n_layers=opt.n_dis + 1, **dis)
            self.D_A_local = Discriminator(n_layers=opt.n_dis - 1, **dis)
            self.D_B_global = Discriminator(n_layers=opt.n_dis + 1, **dis)
            self.D_B_local = Discriminator(n_layers=opt.n_dis - 1, **dis)
            self.G_AB.recompute = self.G_BA.recompute = opt.recompute
        else:
            self.model_names = self.inference_nets
        for net in self.nets().values():
            self.place(net)
        if opt.is_train:
            groups = {'G': [self.G_AB, self.G_BA], 'D': self.discriminators}
            self.optimizers = {name: self.adam([p for net in nets for p in net.parameters() if p.requires_grad],
                                               betas=(0.5, 0.999))
                               for name, nets in groups.items()}
            self.scalers = {k: self.grad_scaler() for k in self.optimizers}

    map_modes = ('attention', 'difference', 'fused', 'cam')

    @staticmethod
    def modify_commandline_options(parser, groups):
        add_network_flags(groups['network'])
        add_step_flags(groups['schedule'])
        add_loss_flags(parser)

    @torch.inference_mode()
    def infer(self, images):
        """images: B x C x H x W in [-1, 1] -> lesion maps of every ``map_modes`` entry (B x H x W in
        [0, 1]), the image-level lesion ``score`` (B,), and ``translated`` / ``heatmap`` visuals.

        difference: the per-pixel change made by the lesion-removing generator (mean absolute
        difference over channels / 2), Gaussian-smoothed over ~1.5 % of the image side to suppress
        texture noise. fused: the geometric mean of attention and difference, so a pixel needs both
        the attention branch and an actual change of the image to count as lesion. cam: the
        generator's CAM heatmap scaled to [0, 1] per image and weighted by the image-level lesion
        probability, so a confidently normal image gets a near-empty map.
        """
        images = self.to_device(images)
        with self.autocast():
            out = self.G_AB(images, with_reconstruction=False)
        translated = out.translated.float()
        difference = (images.float() - translated).abs().mean(1, keepdim=True) / 2
        sigma = max(0.5, 0.015 * images.shape[-1])
        difference = gaussian_blur(difference, [2 * round(2 * sigma) + 1] * 2, [sigma, sigma])
        attention = out.mask.float()
        score = torch.sigmoid(out.cam_logit.float().mean(1))
        heatmap = _normalise_map(out.heatmap)[:, 0]
        maps = {'attention': attention[:, 0], 'difference': difference[:, 0].clamp(0, 1),
                'fused': (attention * difference).clamp_min(0).sqrt()[:, 0],
                'cam': heatmap * score[:, None, None]}
        return {'maps': maps, 'score': score, 'translated': translated, 'heatmap': heatmap}

    @property
    def discriminators(self):
        """The four discriminators (training only), read from their attributes so a DDP wrap shows."""
        return [self.D_A_global, self.D_A_local, self.D_B_global, self.D_B_local]

    def _judge(self, discriminators, images, targets):
        """Sum of LSGAN losses of ``discriminators`` on a list of same-sized image batches, batch k
        aimed at ``targets[k]``; one forward pass per discriminator."""
        batch = torch.cat(images, 0)
        loss = 0.0
        for d in discriminators:
            for outputs, target in zip(zip(*(o.chunk(len(images), 0) for o in d(batch)[:2])), targets):
                loss = loss + _lsgan(outputs, target)
        return loss

    def optimize_parameters(self):
        """One generator step (discriminators frozen), then one discriminator step on the same,
        detached fakes: the generators run once per step. With ``--reuse_fakes False`` the
        discriminator step gets fresh fakes from the updated generators instead (two more passes)."""
        opt = self.opt
        real_A, real_B = self.real_A, self.real_B
        D_A, D_B = self.discriminators[:2], self.discriminators[2:]
        set_requires_grad(self.discriminators, False)
        with self.autocast():
            ab, ba = self.G_AB(real_A), self.G_BA(real_B)
            # Cycle and identity passes of a generator share one batched pass: the norm layers and the
            # gamma/beta MLP work per image, so this equals two passes at half the kernel launches.
            aba, aa = self._batched_pass(self.G_BA, ab.translated, real_A)
            bab, bb = self._batched_pass(self.G_AB, ba.translated, real_B)
            self.loss_G_adv_A = opt.adv_weight * self._judge(D_A, [ba.translated, ba.composite], (1.0, 1.0))
            self.loss_G_adv_B = opt.adv_weight * self._judge(D_B, [ab.translated, ab.composite], (1.0, 1.0))
        self.loss_G_cycle = opt.cycle_weight * (F.l1_loss(aba.translated.float(), real_A) +
                                                F.l1_loss(bab.translated.float(), real_B))
        self.loss_G_identity = opt.identity_weight * (F.l1_loss(aa.translated.float(), real_A) +
                                                      F.l1_loss(bb.translated.float(), real_B))
        # Each generator's CAM tells its source domain (logit 1) from its target domain (logit 0).
        self.loss_G_cam = opt.cam_weight * (_bce(ab.cam_logit, 1.0) + _bce(bb.cam_logit, 0.0) +
                                            _bce(ba.cam_logit, 1.0) + _bce(aa.cam_logit, 0.0))
        self.loss_G_recon = opt.recon_weight * (F.l1_loss(ab.reconstruction.float(), real_A) +
                                                F.l1_loss(ba.reconstruction.float(), real_B))
        # An image already in the target domain needs no region translated.
        self.loss_G_mask = opt.mask_weight * (bb.mask.float().mean() + aa.mask.float().mean())
        self.loss_G_total = (self.loss_G_adv_A + self.loss_G_adv_B + self.loss_G_cycle + self.loss_G_identity +
                             self.loss_G_cam + self.loss_G_recon + self.loss_G_mask)
        self.step_optimizer(self.loss_G_total, 'G')
        for generator in (self.G_AB, self.G_BA):
            getattr(generator, 'module', generator).clip_rho()

        set_requires_grad(self.discriminators, True)
        fake_A, fake_B = (ba, ab) if opt.reuse_fakes else self._fresh_fakes()
        fakes_A = [fake_A.translated.detach(), fake_A.composite.detach()]
        fakes_B = [fake_B.translated.detach(), fake_B.composite.detach()]
        with self.autocast():
            self.loss_D_A = opt.adv_weight * self._judge(D_A, [real_A] + fakes_A, (1.0, 0.0, 0.0))
            self.loss_D_B = opt.adv_weight * self._judge(D_B, [real_B] + fakes_B, (1.0, 0.0, 0.0))
        self.step_optimizer(self.loss_D_A + self.loss_D_B, 'D')

        self.fake_B, self.composite_B, self.recon_A = ab.translated, ab.composite, ab.reconstruction
        self.mask_A = ab.mask
        self.heatmap_A = _normalise_map(ab.heatmap)

    @staticmethod
    def _batched_pass(generator, first, second):
        """(generator(first), generator(second)) without reconstruction, as one pass over both."""
        return generator(torch.cat([first, second], 0), with_reconstruction=False).split([len(first), len(second)])

    def _fresh_fakes(self):
        """(B->A, A->B) outputs of the generators as they are now, without gradients: the fakes of
        the discriminator step with ``--reuse_fakes False``, as in the original code."""
        with torch.no_grad(), self.autocast():
            return (self.G_BA(self.real_B, with_reconstruction=False),
                    self.G_AB(self.real_A, with_reconstruction=False))


def _normalise_map(heatmap):
    """Scale each map of a batch to [0, 1] for display."""
    flat = heatmap.detach().float().flatten(1)
    low, high = flat.min(1)[0], flat.max(1)[0]
    return ((flat - low[:, None]) / (high - low).clamp_min(1e-8)[:, None]).view_as(heatmap)
