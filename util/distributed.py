"""Multi-process training under torchrun: the process group, each process's device, rank 0's duties
and the few things the ranks must agree on (when to stop, the logged losses, a resumed state).

``torchrun --nproc_per_node=N train.py ...`` starts N processes and tells each who it is through
the environment: RANK (0 .. WORLD_SIZE-1 over all nodes), WORLD_SIZE and LOCAL_RANK (its index on
its node, which is also its GPU). Without these variables, or with WORLD_SIZE 1, nothing is
initialised and every function here is a cheap no-op, so a plain ``python train.py`` is unchanged.

Backends: nccl when training on CUDA (one GPU per process, cuda:LOCAL_RANK), gloo on CPU. Small
control messages (stop flags, Python objects) always go through a gloo group on CPU tensors, so
agreeing on them never waits for the GPU.
"""
import contextlib
import io
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

_control_group = None  # gloo group for CPU-side messages (the default group itself on CPU)


def launched_world_size():
    """WORLD_SIZE as set by torchrun (1 when started without it)."""
    return int(os.environ.get('WORLD_SIZE', '1'))


def is_distributed():
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size():
    """Number of processes training together (1 without torchrun)."""
    return dist.get_world_size() if is_distributed() else 1


def rank():
    """This process's index among them, 0 .. world_size() - 1."""
    return dist.get_rank() if is_distributed() else 0


def is_main():
    """True on the process that writes files and talks to visdom (rank 0, or the only process)."""
    return rank() == 0


def init(device):
    """Join the process group described by torchrun's environment; returns this process's device.

    device: the resolved ``--device`` ('cpu', 'cuda' or 'cuda:N'). On CUDA every process takes
    cuda:LOCAL_RANK (choose the GPUs with CUDA_VISIBLE_DEVICES) and the backend is nccl; on CPU it is
    gloo. Without torchrun (WORLD_SIZE unset or 1) nothing happens and ``device`` comes back as given.
    """
    global _control_group
    if launched_world_size() <= 1:
        return device
    if not dist.is_available():
        raise SystemExit(f'error: WORLD_SIZE is {launched_world_size()} but this torch build has no '
                         f'torch.distributed; run a single process')
    if device.startswith('cuda'):
        local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise SystemExit(f'error: LOCAL_RANK is {local_rank} but only {count} GPU(s) are visible; '
                             f'start at most {count} processes per node (--nproc_per_node)')
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
        dist.init_process_group('nccl', device_id=torch.device(device))
        _control_group = dist.new_group(backend='gloo')
    else:
        dist.init_process_group('gloo')
        _control_group = dist.group.WORLD
    return device


def destroy():
    """Leave the process group (if joined); safe to call more than once."""
    global _control_group
    _control_group = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device):
    """``with process_group(opt.device) as device:`` joins the group (see ``init``) and leaves it
    on every way out: normal return, SystemExit, an exception or KeyboardInterrupt."""
    try:
        yield init(device)
    finally:
        destroy()


def wrap(net):
    """``net`` (already on its device) inside DistributedDataParallel, set up for a GAN.

    - forward_sync_buffers=False (the non-deprecated spelling of broadcast_buffers=False in torch
      2.13+): the spectral-norm u/v buffers are updated in place by every training-mode forward. A
      broadcast from rank 0 at each forward would overwrite buffers autograd saved for backward, and
      it is not needed: the buffers start identical (same seed, and DDP still syncs them once at
      construction) and every rank runs the same power iteration on the same weights.
    - no find_unused_parameters: every parameter gets a gradient in its own step (a generator's
      reconstruction decoder too: it feeds the translation stream in every pass), and the
      discriminators are frozen (requires_grad False) during the generator step, so their hooks
      never fire there.
    - no static_graph: a network called several times before one backward (G_AB on real A, then on
      the fake A of the cycle and real B as one batch) is reduced correctly, because autograd sums
      every use of a parameter before its gradient-ready hook fires once per backward
      (tests/util/test_distributed.py checks the result against one process on the same global batch).
    """
    device = next(net.parameters()).device
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None,
                                   forward_sync_buffers=False)


def max_over_ranks(value):
    """The largest of the ranks' integers ``value``, on every rank (e.g. the number of a signal
    that reached at least one rank, 0 where none did)."""
    if not is_distributed():
        return int(value)
    vote = torch.tensor([int(value)], dtype=torch.int64)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=_control_group)
    return int(vote.item())


def mean_over_ranks(tensor):
    """The element-wise mean of ``tensor`` over all ranks (a new tensor on the same device)."""
    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)  # SUM: gloo has no AVG
    return total / world_size()


def barrier():
    """Wait until every rank gets here (e.g. until rank 0 has written its checkpoint)."""
    if is_distributed():
        dist.barrier(group=_control_group)


def broadcast_object(obj):
    """Rank 0's ``obj`` (any picklable object) on every rank."""
    if not is_distributed():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0, group=_control_group)
    return box[0]


def broadcast_state(state):
    """Rank 0's ``state`` (anything torch.save takes, tensors on any device) on every rank, with the
    other ranks' tensors on CPU; rank 0 gets its own object back."""
    if not is_distributed():
        return state
    payload = None
    if is_main():
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
    payload = broadcast_object(payload)
    return state if is_main() else torch.load(io.BytesIO(payload), map_location='cpu', weights_only=True)


def from_main(function, *args, **kwargs):
    """``function(*args, **kwargs)`` run on rank 0 alone; its result (picklable) is returned on every
    rank. A SystemExit on rank 0 is raised on every rank, so no rank waits for one that left."""
    if not is_distributed():
        return function(*args, **kwargs)
    result, code = None, None
    if is_main():
        try:
            result = function(*args, **kwargs)
        except SystemExit as error:
            code = error.code if error.code is not None else 0
    result, code = broadcast_object((result, code))
    if code is not None:
        raise SystemExit(code)
    return result
