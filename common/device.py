"""Seeding and deterministic mode, the device to train on, DistributedDataParallel, weight init,
the opt-in speed-ups (--amp, --channels-last, --compile), and what the bits depend on."""
import contextlib
import inspect
import os
import random
import signal

import numpy as np
import torch
import torch.nn as nn

from .errors import UserError

# cuBLAS is deterministic with one of these workspace settings only (CUDA's and PyTorch's docs).
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")


def deterministic_cublas(notice=True):
    """Set CUBLAS_WORKSPACE_CONFIG to a deterministic value (a user's other value replaced, with a
    notice). cuBLAS reads it once, at its first call in the process, and PyTorch's deterministic
    mode then refuses every matrix product unless it is one of DETERMINISTIC_CUBLAS: a process
    that multiplies on a GPU before seed_everything() (bench.py) calls this first."""
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in DETERMINISTIC_CUBLAS:
        if "CUBLAS_WORKSPACE_CONFIG" in os.environ and notice:
            print(f"notice: CUBLAS_WORKSPACE_CONFIG={os.environ['CUBLAS_WORKSPACE_CONFIG']} does not make cuBLAS "
                  f"deterministic; using {DETERMINISTIC_CUBLAS[0]} for this run.")
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = DETERMINISTIC_CUBLAS[0]


def seed_everything(seed, cudnn_benchmark=False):
    """Seed python, numpy and torch on every device, and allow only deterministic algorithms,
    so that the same command on the same machine gives the same bits."""
    deterministic_cublas(notice=not cudnn_benchmark)  # (--cudnn-benchmark is not deterministic anyway)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds the CPU and every CUDA / MPS device
    # --cudnn-benchmark trades this for speed: cuDNN may then pick a different kernel each run.
    torch.use_deterministic_algorithms(not cudnn_benchmark)
    # Deterministic mode also fills every new tensor with NaN, a debugging aid that costs an extra
    # write per allocation (an extra kernel on a GPU). No result depends on it: the same bits come out.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = cudnn_benchmark


@contextlib.contextmanager
def deterministic_algorithms():
    """Deterministic algorithms and no cuDNN benchmarking inside, whatever --cudnn-benchmark set."""
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def seed_worker(worker_id):
    """DataLoader worker_init_fn: derive numpy and python seeds from the worker's torch seed. Ctrl-C
    and SIGTERM are the main process's to handle (it stops the workers itself)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pick_device(choice, ngpu=1):
    """The torch.device to train on, made the current device; a choice this machine lacks falls
    back to the CPU with a notice. Under torchrun each process takes the GPU of its LOCAL_RANK."""
    cuda, mps = torch.cuda.is_available(), hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if ngpu == 0 or choice == "cpu":
        return torch.device("cpu")
    if ngpu > 1 and not cuda:
        print(f"notice: --ngpu {ngpu} asked for, but this machine has no CUDA GPU; training on the CPU.")
    if choice in ("auto", "cuda") and cuda:
        count, local_rank = torch.cuda.device_count(), int(os.environ.get("LOCAL_RANK", 0))
        if local_rank >= count:
            raise UserError(f"torchrun started more processes on this machine than it has GPUs ({count}); use "
                            f"--nproc_per_node={count}, or --device cpu to run the processes on the CPU.")
        if ngpu > count:
            print(f"notice: --ngpu {ngpu} asked for, but this machine has {count} GPU(s); using those.")
        return use_gpu(local_rank)
    if choice in ("auto", "mps") and mps:
        return torch.device("mps")
    if choice != "auto":
        print(f"notice: --device {choice} is not available on this machine; training on the CPU.")
    return torch.device("cpu")


def use_gpu(index):
    """torch.device("cuda", index), made the current device (torch.cuda.set_device needs the index:
    a bare "cuda" is refused). This also starts CUDA, so that seeding reaches it at once."""
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    return device


def peak_gpu_memory(device):
    """The most memory the process's tensors took on this GPU so far, in MiB."""
    return torch.cuda.max_memory_allocated(device) / 2**20


def init_distributed(device):
    """Under torchrun (RANK and WORLD_SIZE set): join the process group (nccl on a GPU, gloo on
    the CPU) and return (rank, world_size); a plain `python script.py` run returns (0, 1)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    import torch.distributed as dist
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.get_rank() != 0:  # one copy of the log lines and progress bar: rank 0's
        import sys
        sys.stdout = open(os.devnull, "w")
    return dist.get_rank(), dist.get_world_size()


def rank_and_world():
    """(this process's rank, number of processes): (0, 1) without torchrun."""
    import torch.distributed as dist
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def ddp(net, device):
    """Wrap a network in DistributedDataParallel, without re-syncing BatchNorm buffers per forward.

    By default DDP copies rank 0's BatchNorm running statistics into every process before each
    forward, in place. The tutorial runs backward right after each forward of D, which survives
    that, but two forwards before one backward (real and fake batches, as most GAN code does)
    fail with "modified by an inplace operation". Training normalises with batch statistics and
    never reads the running ones, so each process keeping its own changes nothing that is
    computed, and saves a broadcast per forward. (SyncBatchNorm would instead normalise over the
    whole global batch: a different computation from the tutorial's.)
    """
    DDP = nn.parallel.DistributedDataParallel
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
               else {"broadcast_buffers": False})  # the older name of the same switch
    return DDP(net, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def weights_init(m, bn_mean=1.0):
    """DCGAN init: conv weights ~ N(0, 0.02); BatchNorm weights ~ N(bn_mean, 0.02), bias 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight.data, bn_mean, 0.02)
        nn.init.constant_(m.bias.data, 0)


def wrappers(net):
    """net, and the model inside each of its wrappers (nn.DataParallel, DDP, Autocast, torch.compile)."""
    yield net
    while isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel, Autocast)) or \
            hasattr(net, "_orig_mod"):
        net = net._orig_mod if hasattr(net, "_orig_mod") else net.module  # (torch.compile's wrapper)
        yield net


def bare(net):
    """The model inside all wrappers, so that checkpoints load anywhere."""
    return list(wrappers(net))[-1]


def data_parallel_gpus(net):
    """How many GPUs nn.DataParallel splits each batch over (1 without it): each normalises its
    share with BatchNorm on its own, so this changes the math."""
    return next((max(1, len(m.device_ids)) for m in wrappers(net) if isinstance(m, nn.DataParallel)), 1)


class Autocast(nn.Module):
    """Runs a network in bfloat16 autocast and returns float32, so that losses (BCELoss, which
    autocast refuses) are computed in full precision."""

    def __init__(self, module, device_type):
        super().__init__()
        self.module, self.device_type = module, device_type

    def forward(self, *inputs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.module(*inputs).float()


def sigmoid_in_float32(module, inputs):
    """A forward pre-hook for nn.Sigmoid under --amp: a bfloat16 sigmoid rounds every output from
    1 - 2**-9 up to exactly 1.0, where its gradient is exactly 0 (D would learn nothing from the
    fakes it takes for real); in float32 it does not. Autocast leaves float32 inputs alone here."""
    return tuple(x.float() for x in inputs)


def speed_up(net, device, *, amp=False, channels_last=False, compile=False):
    """Apply the opt-in --channels-last, --amp and --compile to a network."""
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if amp:
        for m in net.modules():
            if isinstance(m, nn.Sigmoid):
                m.register_forward_pre_hook(sigmoid_in_float32)
        if isinstance(net, nn.DataParallel):  # its replicas run in threads of their own, which would not
            net.module = Autocast(net.module, device.type)  # inherit an autocast entered outside it
        else:
            net = Autocast(net, device.type)
    if compile:
        net = torch.compile(net)
    return net


def what_the_bits_depend_on(device, deterministic=True):
    """Besides the seed and the settings: what makes the same run give other bits elsewhere. A
    resume under other values goes on, but says that it will not match a run that never stopped."""
    record = {"torch": str(torch.__version__), "device": device.type, "deterministic": deterministic}
    if device.type == "cpu":
        record["threads"] = torch.get_num_threads()  # the CPU kernels split their sums by thread
    elif device.type == "cuda":  # (cuBLAS's workspace setting: a user may keep another deterministic one)
        record.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                      cudnn=torch.backends.cudnn.version(), cublas_workspace=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    return record
