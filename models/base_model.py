"""Shared machinery of every model: declared nets/losses, device and precision, atomic checkpoints.

A model subclass declares ``model_names`` (its networks, attributes of the same name),
``loss_names``, ``loss_groups`` (one visdom window each) and ``visual_names``, and implements
``set_input``, ``optimize_parameters`` and ``lesion_map``.
"""
import contextlib
import pickle

import torch
from torch import nn

from util.atomic import atomic_write

CHECKPOINT_FORMAT = 'cltnet-seg-checkpoint'


class CheckpointError(ValueError):
    """A checkpoint that is not ours, or does not match the model's architecture."""


def set_requires_grad(nets, flag):
    """Freeze (False) or unfreeze (True) every parameter of ``nets``."""
    for net in nets:
        for param in net.parameters():
            param.requires_grad_(flag)


def amp_dtype(amp, device):
    """The autocast dtype for ``--amp`` on ``device``, or None for full precision."""
    if amp == 'off':
        return None
    if amp == 'fp16':
        return torch.float16
    if amp == 'bf16':
        return torch.bfloat16
    if device.startswith('cuda'):
        # Measured on an H200 (2026-11-27, cpu preset, batch 1): 0.32 s per step with bf16 autocast,
        # 0.22 s without. The step is bound by kernel launches, and autocast adds a cast per weight use.
        return None
    # On CPU bf16 only pays with native support (AVX512-BF16 / AMX); emulated bf16 is slower.
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def check_compile(device):
    """Exit with one line when torch.compile cannot build code on ``device`` (no C++ compiler on CPU,
    no Triton on CUDA). Compilation is lazy: without this probe the failure would come at the first
    training step, as a long traceback."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.zeros(2, device=device))
    except Exception as error:  # inductor raises many types; every one means the same here
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SystemExit(f'error: --compile True, but torch.compile does not work on this machine ({reason}); '
                         f'use --compile False') from None


def atomic_torch_save(obj, path):
    """torch.save to a temp file in the same folder, then rename: a crash never leaves half a file."""
    atomic_write(path, lambda handle: torch.save(obj, handle), mode='wb')


def torch_load_safely(path):
    """torch.load with ``weights_only=True`` onto the CPU: tensors and plain data, never code. A file
    whose pickle asks for anything else is refused (CheckpointError), before any of it runs;
    FileNotFoundError passes through."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as error:
        if 'GLOBAL' not in str(error):  # no object asked for: the bytes are no pickle (damaged or foreign)
            raise CheckpointError(f'{path}: cannot be read (not a torch file); delete it to fall back to an '
                                  f'earlier checkpoint, or pass another file') from None
        raise CheckpointError(f'{path}: holds more than tensors and plain data (a pickled object that could run '
                              f'code), so it is not opened; use a file written by train.py or from weights/') from None
    except Exception as error:  # a truncated or foreign file: torch raises many types
        raise CheckpointError(f'{path}: cannot be read ({type(error).__name__}); '
                              f'delete it to fall back to an earlier checkpoint, or pass another file') from None


def add_flag_table(group, rows, help_prefix=''):
    """Add ``rows`` of (flag, type, default, help) to an argument ``group``: a model's own flags as one table."""
    for flag, kind, default, text in rows:
        group.add_argument(flag, type=kind, default=default, help=help_prefix + text)


class BaseModel:
    """Holds options, device and precision; saves and loads the declared networks."""

    model_names = []
    # The networks test.py needs (what a released-weights file holds); default: all of them.
    inference_nets = None
    # The options that shape the networks (checked when a checkpoint loads).
    architecture_keys = ('model', 'img_size', 'img_ch', 'ch', 'n_res', 'n_dis', 'light')
    # Shape options recorded only when not at this default: files written before such an option existed
    # (which have no entry for it) still load.
    optional_architecture = {}
    loss_names = []
    loss_groups = {}
    visual_names = []
    # The lesion maps ``infer`` returns (test.py's --map_mode takes them); what --help says of them (None:
    # their names).
    map_modes = ()
    map_modes_help = None
    # train.py's stage-1 defaults of this model's flags per dataset ({dataset: {flag: value}}); a dataset not
    # listed takes ``fallback_dataset``'s, with a note that names them ``dataset_defaults_name``.
    dataset_defaults = {}
    fallback_dataset = None
    dataset_defaults_name = 'defaults'
    # train.py's defaults when it trains this model, over the preset's (the stage-2 U-Net's schedule).
    train_defaults = {}

    # {flag: (lowest, highest or None)} of this model's numeric flags, checked when train.py parses.
    flag_ranges = {}

    @staticmethod
    def modify_commandline_options(parser, groups):
        """Add this model's flags to train.py's ``parser`` (``type='bool'``: the True/False spelling);
        ``groups``: the 'network' and 'schedule' argument groups to add to (a group of its own comes from
        ``parser.add_argument_group``). Every model's flags are added, whichever --model is chosen: one
        argument list serves every model, and run records keep every flag."""

    def __init__(self, opt):
        self.opt = opt
        self.device = torch.device(opt.device)
        self.dtype = amp_dtype(opt.amp, opt.device)
        self.memory_format = torch.channels_last if opt.channels_last else torch.contiguous_format
        if opt.compile:
            check_compile(self.device)
        self.optimizers = {}
        self.scalers = {}

    @classmethod
    def served_nets(cls, architecture):
        """The networks a released-weights file of this ``architecture`` holds (what test.py needs)."""
        return cls.inference_nets or cls.model_names

    def autocast(self):
        """Autocast context for the forward passes (a no-op in full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def place(self, net):
        """Move ``net`` to the model's device, its convolution weights in the ``--channels_last``
        memory format, compiled in place with ``--compile True`` (its state dict keeps its keys);
        returns ``net``.

        The other 4-D parameters (the 1 x C x 1 x 1 weights of the norm layers) keep the default
        strides, which are the ones autograd gives their gradients: DistributedDataParallel lays out
        its gradient buckets like the parameters and would otherwise copy and warn at every step.
        """
        net.to(self.device)
        for module in net.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                module.to(memory_format=self.memory_format)
        if self.opt.compile:
            net.compile()
        return net

    def grad_scaler(self):
        """A GradScaler, active only for fp16 autocast (bf16 and fp32 need no loss scaling)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    def adam(self, params, **kwargs):
        """Adam (--lr, --weight_decay) with the fused kernel: one pass over each parameter's memory on
        CPU (6 % faster per CPU step here: the discriminators hold ~28M weights) and one launch per
        group on CUDA, where a step is launch-bound."""
        return torch.optim.Adam(params, lr=self.opt.lr, weight_decay=self.opt.weight_decay, fused=True, **kwargs)

    def single_adam(self, name, net):
        """Set up one Adam optimiser for ``net`` under ``name``, with its scaler."""
        self.optimizers = {name: self.adam(net.parameters())}
        self.scalers = {name: self.grad_scaler()}

    def step_optimizer(self, loss, name):
        """Backward of ``loss`` and one step of optimiser ``name`` (through its scaler)."""
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def nets(self):
        return {name: getattr(self, name) for name in self.model_names}

    def to_device(self, tensor):
        """Move an input batch to the model's device and memory format."""
        return tensor.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def set_input(self, batch):
        """batch: {'A': B x C x H x W lesion images, 'B': normal images}, both in [-1, 1]."""
        self.real_A = self.to_device(batch['A'])
        self.real_B = self.to_device(batch['B'])

    def set_learning_rate(self, step):
        """Constant lr, then (with --decay_flag) linear decay to 0 over the second half."""
        opt = self.opt
        half = opt.iteration // 2
        lr = opt.lr
        if opt.decay_flag and step > half:
            lr = opt.lr * max(0.0, 1 - (step - half) / max(1, opt.iteration - half))
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group['lr'] = lr

    def train(self, mode=True):
        for net in self.nets().values():
            net.train(mode)

    def get_current_losses(self):
        """Loss name -> detached scalar tensor of the last step (no device sync here)."""
        return {name: getattr(self, 'loss_' + name).detach() for name in self.loss_names}

    def get_current_visuals(self):
        """Visual name -> tensor B x C x H x W of the last step, for sample grids and visdom."""
        return {name: getattr(self, name).detach().float() for name in self.visual_names}

    def architecture(self):
        """The options that fix tensor shapes (``architecture_keys``, and ``optional_architecture``'s keys
        whose value is not their default); a checkpoint loads only into the same architecture."""
        architecture = {key: getattr(self.opt, key) for key in self.architecture_keys}
        for key, default in self.optional_architecture.items():
            if getattr(self.opt, key, default) != default:
                architecture[key] = getattr(self.opt, key)
        return architecture

    def wrap_distributed(self, wrap):
        """Replace every network by ``wrap(net)`` (DistributedDataParallel)."""
        for name in self.model_names:
            setattr(self, name, wrap(getattr(self, name)))

    def state_dict(self, nets_only=False):
        """Everything needed to resume (or just the networks): plain state dicts, no DDP prefix."""
        state = {'format': CHECKPOINT_FORMAT, 'architecture': self.architecture(),
                 'nets': {name: _unwrap(net).state_dict() for name, net in self.nets().items()}}
        if not nets_only:
            state['optimizers'] = {name: o.state_dict() for name, o in self.optimizers.items()}
            state['scalers'] = {name: s.state_dict() for name, s in self.scalers.items()}
        return state

    def load_state_dict(self, state, source='checkpoint', nets=None):
        """Restore from ``state``; raises CheckpointError naming ``source`` on any mismatch."""
        if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{source}: not a CLTNet-Seg checkpoint; give a file written by train.py")
        theirs, ours = state['architecture'], self.architecture()
        diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
        if diff:
            detail = ', '.join(f'--{k} {a} (checkpoint) vs {b} (now)' for k, (a, b) in diff.items())
            raise CheckpointError(f"{source}: written for another architecture: {detail}; "
                                  f"pass the checkpoint's values")
        for name in nets or self.model_names:
            try:
                _unwrap(getattr(self, name)).load_state_dict(state['nets'][name])
            except (KeyError, RuntimeError) as error:
                # Its recorded architecture matches, its tensors do not (another code version, an edited file).
                detail = (str(error).strip().splitlines() or [''])[-1].strip()
                raise CheckpointError(f'{source}: written for another architecture: network {name} does not '
                                      f'fit ({type(error).__name__}: {detail}); retrain or pass a matching '
                                      f'checkpoint') from None
        for name, optimizer in self.optimizers.items():
            if 'optimizers' in state:
                optimizer.load_state_dict(state['optimizers'][name])
        for name, scaler in self.scalers.items():
            if 'scalers' in state:
                scaler.load_state_dict(state['scalers'][name])

    def nonfinite_weight(self):
        """'net.tensor' of the first parameter or buffer holding a NaN or an infinity, else None."""
        for name, net in self.nets().items():
            for key, tensor in _unwrap(net).state_dict().items():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    return f'{name}.{key}'
        return None

    def save(self, path, **extra):
        """Write networks, optimisers and ``extra`` (step, options, RNG states) atomically."""
        state = self.state_dict()
        state.update(extra)
        atomic_torch_save(state, path)

    def load(self, path):
        """Load a checkpoint written by ``save`` (by any number of processes); returns the full dict
        (step, rng, ...) with its tensors on CPU.

        Read onto the CPU and copied into the networks, so the optimisers keep their step counters on
        the CPU where Adam creates them (a CUDA counter costs a device sync per parameter and step).
        """
        state = torch_load_safely(path)
        self.load_state_dict(state, source=path)
        return state


def _unwrap(net):
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(net, 'module', net)
