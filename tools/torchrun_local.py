"""torchrun for the processes of one machine, its rendezvous store listening on 127.0.0.1 alone.

    python -m tools.torchrun_local --nproc_per_node=4 train.py --dataset ISIC ...   (start_train.sh, NPROC=4)

``torchrun --standalone`` hosts its TCP store on every interface: torch 2.14's TCPStore binds the wildcard
address whatever host it is given (--rdzv-endpoint, --master-addr and --local-addr only say where clients
connect), so any machine of the network could reach the store of a run. Its one way to choose the address
is a listening socket handed to the store; this makes one on 127.0.0.1 and gives it to the store of
torchrun's static rendezvous, which the processes share. gloo's connections between the processes go
over the loopback interface too (GLOO_SOCKET_IFNAME, unless set). Every other torchrun flag is passed on.
"""
import os
import socket
import sys

import torch.distributed as dist
from torch.distributed import run
from torch.distributed.elastic.rendezvous import static_tcp_rendezvous

LOOPBACK = '127.0.0.1'


def store_listening_on(listener):
    """A TCPStore class whose server (the one the rendezvous makes) takes the socket ``listener``."""
    class LoopbackStore(dist.TCPStore):
        def __init__(self, host_name, port, world_size=None, is_master=False, *args, **kwargs):
            if is_master:
                kwargs['master_listen_fd'] = listener.detach()
            super().__init__(host_name, port, world_size, is_master, *args, **kwargs)
    return LoopbackStore


def main(argv=None):
    """Run torch.distributed.run with ``argv`` (default sys.argv[1:]) on a single node, store on 127.0.0.1."""
    argv = sys.argv[1:] if argv is None else list(argv)
    listener = socket.create_server((LOOPBACK, 0))
    if os.path.isdir('/sys/class/net/lo'):  # Linux's loopback interface
        os.environ.setdefault('GLOO_SOCKET_IFNAME', 'lo')
    static_tcp_rendezvous.TCPStore = store_listening_on(listener)
    run.main(['--nnodes=1', '--rdzv-backend=static', f'--master-addr={LOOPBACK}',
              f'--master-port={listener.getsockname()[1]}', *argv])


if __name__ == '__main__':
    main()
