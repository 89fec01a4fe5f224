"""What the three GAN scripts share: seeding, data, weight init, checkpoints and pictures.

Plain functions only. The models and the training loops live in the scripts themselves.
"""
import argparse
import glob
import hashlib
import math
import os
import random
import shlex
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms as transforms
import torchvision.utils as vutils


class UserError(Exception):
    """A mistake the user can fix. The scripts print it as one sentence, with no traceback."""


class Diverged(Exception):
    """A loss or a weight became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def positive_int(text):
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def nonnegative_int(text):
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive whole number, got {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def beta(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def add_common_args(parser, *, dataroot, epochs, batch_size, workers, seed):
    """The flags every script has; the defaults are each tutorial's own."""
    a = parser.add_argument
    a("--dataroot", default=dataroot, help="dataset folder")
    a("--outdir", default=None, help="output folder (default: output/<script name>)")
    a("--epochs", type=positive_int, default=epochs, help="number of training epochs")
    a("--batch-size", type=positive_int, default=batch_size, help="images per batch")
    a("--workers", type=nonnegative_int, default=workers,
      help="DataLoader worker processes (used to decode the dataset, and with --stream)")
    a("--seed", type=int, default=seed, help="random seed (with --generate: the seed of the noise)")
    a("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
      help="where to train: auto picks cuda, then mps, then the cpu")
    a("--resume", action="store_true", help="continue the run in --outdir from its checkpoint.pt")
    a("--overwrite", action="store_true",
      help="start a new run even if --outdir already holds one (its files are replaced)")
    a("--checkpoint-every", type=positive_int, default=500,
      help="also save checkpoint.pt every this many iterations (besides every epoch end)")
    a("--generate", type=positive_int, metavar="N",
      help="train nothing: write N images from the generator in <outdir>/checkpoint.pt")
    a("--interpolate", action="store_true",
      help="with --generate: also write a walk through the latent space (grid and GIF)")
    a("--stream", action="store_true",
      help="read images from disk every epoch, as the tutorial does, instead of holding the "
           "decoded dataset in memory (for datasets too big for memory; same results)")
    a("--fake-data", type=positive_int, nargs="?", const=1024, metavar="N",
      help="train on N random images (default 1024) instead of a dataset: a smoke run that "
           "needs no download")
    # Opt-in speed-ups that change the numerics (a little), so they are off by default:
    a("--amp", action="store_true",
      help="mixed precision: run the networks in bfloat16 autocast (losses stay in float32)")
    a("--channels-last", action="store_true", help="channels-last memory format for the conv nets")
    a("--compile", action="store_true", help="torch.compile the networks (slow first iterations)")
    a("--cudnn-benchmark", action="store_true",
      help="let cuDNN pick the fastest kernels on a GPU: faster, but no longer bit-reproducible")


# Settings that do not change what is computed: a resumed run may change these freely.
NOT_MATH = {"dataroot", "outdir", "epochs", "workers", "device", "ngpu", "resume", "overwrite",
            "checkpoint_every", "generate", "interpolate", "stream", "cudnn_benchmark"}


def math_settings(args, data_id):
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_MATH}
    settings["data"] = data_id
    settings["processes"] = rank_and_world()[1]  # under DDP each process normalises its own share
    return settings


def run(main):
    """Call main(), turning the mistakes a user can make into one sentence and an exit code."""
    try:
        main()
        if rank_and_world()[1] > 1:
            import torch.distributed as dist
            dist.destroy_process_group()
    except UserError as e:
        message = str(e).strip()
        if "Original Traceback" in message:  # raised in a DataLoader worker: keep the sentence only
            message = message.splitlines()[-1].split(": ", 1)[-1]
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except RuntimeError as e:
        if "DataLoader worker" in str(e):  # a worker process died (out of memory, killed, ...)
            print(f"error: {first_line(e)}; the last checkpoint is intact. Rerun with --resume and "
                  f"fewer --workers (0 reads in the main process).", file=sys.stderr)
            sys.exit(1)
        # BCELoss refuses a NaN input (on a GPU, as a device-side assert): training diverged.
        if "between 0 and 1" not in str(e) and "device-side assert" not in str(e):
            raise
        print(f"error: training diverged: D's output became NaN at epoch {POSITION['epoch']}, iteration "
              f"{POSITION['iteration']}; the last checkpoint was left as it was. Try a lower --lr.",
              file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt:
        if STOP["signal"] is None:
            print("\ninterrupted before training started; nothing to save.", file=sys.stderr)
        else:
            print("\nquit on a second Ctrl-C without saving this iteration; checkpoint.pt still holds the "
                  "last save whole. Continue from it with --resume.", file=sys.stderr)
        sys.exit(130)


# ---------------------------------------------------------------------------------------------
# Seeding and devices
# ---------------------------------------------------------------------------------------------

def seed_everything(seed, cudnn_benchmark=False):
    """Seed python, numpy and torch on every device, and allow only deterministic algorithms,
    so that the same command on the same machine gives the same bits."""
    # cuBLAS needs a fixed workspace to be deterministic; it reads this when CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds the CPU and every CUDA / MPS device
    # --cudnn-benchmark trades this for speed: cuDNN may then pick a different kernel each run.
    torch.use_deterministic_algorithms(not cudnn_benchmark)
    # Deterministic mode also fills every new tensor with NaN, a debugging aid that costs an extra
    # write per allocation (an extra kernel on a GPU). No result depends on it: the same bits come out.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = cudnn_benchmark


def seed_worker(worker_id):
    """DataLoader worker_init_fn: derive numpy and python seeds from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def pick_device(choice, ngpu=1):
    """The torch.device to train on; a choice this machine lacks falls back with a notice."""
    cuda, mps = torch.cuda.is_available(), hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if ngpu == 0 or choice == "cpu":
        return torch.device("cpu")
    if ngpu > 1 and not cuda:
        print(f"notice: --ngpu {ngpu} asked for, but this machine has no CUDA GPU; training on the CPU.")
    if choice in ("auto", "cuda") and cuda:
        if "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        if ngpu > torch.cuda.device_count():
            print(f"notice: --ngpu {ngpu} asked for, but this machine has "
                  f"{torch.cuda.device_count()} GPU(s); using those.")
        return torch.device("cuda:0")
    if choice in ("auto", "mps") and mps:
        return torch.device("mps")
    if choice != "auto":
        print(f"notice: --device {choice} is not available on this machine; training on the CPU.")
    return torch.device("cpu")


def init_distributed():
    """Under torchrun (RANK and WORLD_SIZE set): join the process group and return
    (rank, world_size); a plain `python script.py` run returns (0, 1) and changes nothing."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    import torch.distributed as dist
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.get_rank() != 0:  # one copy of the log lines and progress bar: rank 0's
        sys.stdout = open(os.devnull, "w")
    return dist.get_rank(), dist.get_world_size()


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
    import inspect
    DDP = nn.parallel.DistributedDataParallel
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
               else {"broadcast_buffers": False})  # the older name of the same switch
    return DDP(net, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def rank_and_world():
    import torch.distributed as dist
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def on_main_process(function):
    """Only rank 0 writes files; the other processes skip the call."""
    def wrapper(*args, **kwargs):
        if rank_and_world()[0] == 0:
            return function(*args, **kwargs)
    wrapper.__doc__, wrapper.__name__ = function.__doc__, function.__name__
    return wrapper


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CELEBA_URL = "https://drive.google.com/drive/folders/0B7EVK8r0v71pTUZsaXdaSnZBZzg (img_align_celeba.zip)"
CELEBA_LAYOUT = "<dataroot>/img_align_celeba/000001.jpg, 000002.jpg, ..."
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# The tutorials' ToTensor() + Normalize((0.5,), (0.5,)): pixels in [0, 255] -> [-1, 1].
TO_TENSOR_NORMALIZED = [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]


def normalize(images):
    """uint8 images -> float in [-1, 1], bit for bit what ToTensor + Normalize(0.5, 0.5) give."""
    return images.float().div_(255).sub_(0.5).div_(0.5)


def mnist(root, stream):
    """MNIST's training split: decoded into one uint8 tensor N x 1 x 28 x 28, or for --stream the
    tutorial's dataset with its ToTensor + Normalize transform."""
    import torchvision.datasets as dset
    if os.path.exists(root) and not os.path.isdir(root):
        raise UserError(f"--dataroot {root} is a file; give the folder that holds MNIST/raw/.")
    raw = os.path.join(root, "MNIST", "raw")
    try:
        dataset = dset.MNIST(root=root, train=True, download=True,
                             transform=transforms.Compose(TO_TENSOR_NORMALIZED))
    except Exception as e:  # torchvision raises several kinds; only the files tell which case it is
        if not all(os.path.exists(os.path.join(raw, f)) for f in MNIST_FILES):
            raise UserError(
                f"MNIST is not in {root} and could not be downloaded ({first_line(e)}); put the four "
                f"files {', '.join(MNIST_FILES)} (or their .gz) into {raw}/ or run once with network "
                f"access.") from None
        raise UserError(f"an MNIST file in {raw} is corrupt or truncated ({first_line(e) or type(e).__name__}); "
                        f"delete that folder's files and run again to download them afresh.") from None
    images = dataset.data.unsqueeze(1).contiguous()
    if images.shape[1:] != (1, 28, 28) or len(images) != len(dataset.targets):
        raise UserError(f"the MNIST files in {raw} do not hold 28x28 "
                        f"digits; delete them and run again to download them afresh.")
    data_id = "mnist-" + hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
    return data_dict(None if stream else images, dataset if stream else None, data_id)


def fake_images(n, shape):
    """N random uint8 images, the same every time: a dataset for smoke runs."""
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return data_dict(images, None, f"fake-{n}")


def first_line(e):
    return str(e).strip().splitlines()[0] if str(e).strip() else ""


def check_image_folder(root):
    """Refuse, in one sentence, the layouts that make ImageFolder fail or find nothing."""
    how = f"expected layout: {CELEBA_LAYOUT}; download img_align_celeba.zip from {CELEBA_URL} " \
          f"and unzip it into --dataroot"
    if not os.path.exists(root):
        raise UserError(f"--dataroot {root} does not exist ({how}).")
    if not os.path.isdir(root):
        raise UserError(f"--dataroot {root} is a file, not a folder ({how}).")
    entries = list(os.scandir(root))
    loose = [e for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    folders = [e for e in entries if e.is_dir()]
    if loose and not folders:
        raise UserError(f"--dataroot {root} holds {len(loose)} images directly, but ImageFolder needs "
                        f"them one folder down: move them into {os.path.join(root, 'img_align_celeba')}/ "
                        f"({how}).")
    if not any(f.lower().endswith(IMAGE_EXTENSIONS) for d in folders for _, _, fs in os.walk(d.path) for f in fs):
        raise UserError(f"--dataroot {root} holds no images ({how}).")


class _Decode(torch.utils.data.Dataset):
    """Each image of an ImageFolder after Resize + CenterCrop, as (uint8 tensor, True), or
    (empty tensor, False) when the file cannot be read."""

    def __init__(self, samples, resize_crop):
        self.samples, self.resize_crop = samples, resize_crop

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from torchvision.datasets.folder import default_loader
        try:
            image = self.resize_crop(default_loader(self.samples[i][0]))  # RGB, as ImageFolder
            return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1), True
        except Exception:  # PIL raises many kinds for damaged files
            return torch.zeros(0, dtype=torch.uint8), False


def image_folder(root, image_size, workers, cache_dirs, stream):
    """The tutorial's ImageFolder, decoded once into a uint8 tensor that later runs reuse.

    With --stream, the tutorial's dataset itself (decoded again every epoch).
    """
    import torchvision.datasets as dset
    check_image_folder(root)
    resize_crop = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size)])
    dataset = dset.ImageFolder(root=root, transform=transforms.Compose([resize_crop] + TO_TENSOR_NORMALIZED),
                               loader=load_rgb)
    files = [os.path.relpath(path, root) for path, _ in dataset.samples]
    stats = [os.stat(path) for path, _ in dataset.samples]
    data_id = "images-" + hashlib.sha256("\n".join(
        f"{f}\t{s.st_size}" for f, s in zip(files, stats)).encode()).hexdigest()[:16]
    if stream:
        return data_dict(None, dataset, data_id)
    # The cache is valid for exactly this list of files, sizes and times, at this image size.
    key = hashlib.sha256(("v1\n%d\n" % image_size + "\n".join(
        f"{f}\t{s.st_size}\t{s.st_mtime_ns}" for f, s in zip(files, stats))).encode()).hexdigest()[:16]
    name = f"image_cache_{image_size}px_{key}.pt"
    for folder in cache_dirs:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            try:
                cache = torch.load(path, weights_only=True)
                print(f"Loaded {len(cache['images'])} decoded images from {path}")
                report_bad(cache["bad"])
                return data_dict(cache["images"], None, data_id)
            except Exception:
                print(f"notice: the image cache {path} is unreadable; decoding the images again.")
    print(f"Decoding {len(files)} images once (Resize({image_size}), CenterCrop({image_size})) ...")
    loader = torch.utils.data.DataLoader(_Decode(dataset.samples, resize_crop), batch_size=None,
                                         num_workers=workers, worker_init_fn=seed_worker,
                                         generator=torch.Generator())  # leaves the global RNG alone
    images, bad = [], []
    for i, (image, ok) in enumerate(loader):
        (images if ok else bad).append(image if ok else files[i])
    report_bad(bad)
    if not images:
        raise UserError(f"none of the {len(files)} images in {root} could be read; check the files.")
    cache = {"images": torch.stack(images), "bad": bad}
    for folder in cache_dirs:  # the dataset's folder if we may write there, else the outdir
        try:
            atomic_save(cache, os.path.join(folder, name))
            for old in glob.glob(os.path.join(folder, f"image_cache_{image_size}px_*.pt")):
                if os.path.basename(old) != name:
                    os.remove(old)  # a cache of an older list of images
            break
        except OSError:
            continue
    return data_dict(cache["images"], None, data_id)


def load_rgb(path):
    """ImageFolder's own loader (any image -> RGB), with a clear error for a damaged file; that
    stops --stream, while the decoded cache skips such files with a warning."""
    from torchvision.datasets.folder import default_loader
    try:
        return default_loader(path)
    except Exception as e:  # PIL raises many kinds for damaged files
        raise UserError(f"{path} cannot be read ({first_line(e) or type(e).__name__}); remove or replace it, or "
                        f"run without --stream, which skips unreadable images with a warning.") from None


def data_dict(images, dataset, data_id):
    """images: uint8 tensor (or None with --stream); dataset: the tutorial's (with --stream)."""
    return {"images": images, "dataset": dataset, "id": data_id,
            "n": len(images) if images is not None else len(dataset)}


def report_bad(bad):
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        print(f"warning: skipped {len(bad)} image(s) that could not be read: {shown}")


def epoch_order(n, seed, epoch):
    """The shuffled order of the N images in one epoch.

    The tutorial's DataLoader(shuffle=True) draws a fresh permutation each epoch from the global
    RNG. Drawing it from (seed, epoch) instead gives the same kind of shuffle, and a resumed run
    can redraw it exactly without storing anything.
    """
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def n_batches(data, batch_size):
    """Batches per epoch; the last may be smaller. Under DDP an incomplete last batch is dropped,
    so that every process gets an equal share of every batch."""
    world = rank_and_world()[1]
    return math.ceil(data["n"] / batch_size) if world == 1 else data["n"] // batch_size


def batches(data, args, epoch, start, device):
    """Yield (i, batch) for the batches start, start+1, ... of one epoch.

    Batch i holds the images order[i*batch_size : (i+1)*batch_size] (the last one may be
    smaller, as in the tutorials) as float in [-1, 1] on `device`. From the decoded uint8
    tensor that is one indexing op; with --stream a DataLoader reads the files instead, with
    the same order and the same pixels.
    """
    order, bs, nb = epoch_order(data["n"], args.seed, epoch), args.batch_size, n_batches(data, args.batch_size)
    rank, world = rank_and_world()
    if world > 1:  # DDP: every process draws the same order and takes its share of each batch
        share = bs // world
        order = order[:nb * bs].view(nb, world, share)[:, rank].reshape(-1)
        bs = share
    if data["images"] is not None:
        images = data["images"]
        order = order.to(images.device)
        chunks = ((i, images[order[i * bs:(i + 1) * bs]]) for i in range(start, nb))
    else:
        index_lists = [order[i * bs:(i + 1) * bs].tolist() for i in range(start, nb)]
        loader = torch.utils.data.DataLoader(
            data["dataset"], batch_sampler=index_lists, num_workers=args.workers,
            worker_init_fn=seed_worker, pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(args.seed + epoch))  # leaves the global RNG alone
        chunks = ((i, x) for i, (x, _) in enumerate(loader, start))
    # Test hooks, "epoch:iteration": that batch holds NaNs / the process signals itself there
    # ("epoch:iteration/SIGTERM", or "/SIGINT,SIGINT" for Ctrl-C pressed twice).
    nan_at, signal_at = os.environ.get("GAN_TEST_NAN_AT"), os.environ.get("GAN_TEST_SIGNAL_AT")
    for i, x in chunks:
        if signal_at and signal_at.split("/")[0] == f"{epoch}:{i}":
            for name in (signal_at.partition("/")[2] or "SIGINT").split(","):
                os.kill(os.getpid(), getattr(signal, name))
        x = x.to(device, non_blocking=True)
        x = normalize(x) if x.dtype == torch.uint8 else x
        if args.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if nan_at == f"{epoch}:{i}":
            x = x * float("nan")
        POSITION.update(epoch=epoch, iteration=i)
        yield i, x


POSITION = {"epoch": 0, "iteration": 0}  # the batch last handed out, for error messages


def first_images(data, args, k):
    """The first k images of epoch 0's order, as float in [-1, 1] on the CPU (for the pictures)."""
    order = epoch_order(data["n"], args.seed, 0)[:k]
    if data["images"] is not None:
        return normalize(data["images"][order.to(data["images"].device)].cpu())
    return torch.stack([data["dataset"][i][0] for i in order.tolist()])


def data_on_device(data, device):
    """Keep the decoded dataset on the training device when it fits there."""
    if data["images"] is not None and device.type != "cpu":
        try:
            data["images"] = data["images"].to(device)
        except torch.cuda.OutOfMemoryError:
            print("notice: the dataset does not fit on the GPU; keeping it in host memory.")
            data["images"] = data["images"].pin_memory()
    return data


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

def weights_init(m, bn_mean=1.0):
    """DCGAN init: conv weights ~ N(0, 0.02); BatchNorm weights ~ N(bn_mean, 0.02), bias 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight.data, bn_mean, 0.02)
        nn.init.constant_(m.bias.data, 0)


def bare(net):
    """The model inside nn.DataParallel, DDP, torch.compile or Autocast, so checkpoints load anywhere."""
    while True:
        if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel, Autocast)):
            net = net.module
        elif hasattr(net, "_orig_mod"):  # torch.compile
            net = net._orig_mod
        else:
            return net


class Autocast(nn.Module):
    """Runs a network in bfloat16 autocast and returns float32, so that losses (BCELoss, which
    autocast refuses) are computed in full precision."""

    def __init__(self, module, device_type):
        super().__init__()
        self.module, self.device_type = module, device_type

    def forward(self, *inputs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.module(*inputs).float()


def speed_up(net, args, device):
    """Apply the opt-in --channels-last, --amp and --compile to a network."""
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if args.amp:
        net = Autocast(net, device.type)
    if args.compile:
        net = torch.compile(net)
    return net


# ---------------------------------------------------------------------------------------------
# History of the losses
# ---------------------------------------------------------------------------------------------

def new_history(names):
    return {"epoch": [], "iteration": [], **{name: [] for name in names}}


def record(pending, epoch, i, *values):
    """Keep this iteration's numbers on the device: no host sync until flush()."""
    pending.append((epoch, i, torch.stack([v.detach().float().reshape(()) for v in values])))


def flush(history, pending):
    """Move the pending numbers into history (one host sync); stop if any is NaN or infinite."""
    if not pending:
        return
    values = torch.stack([v for _, _, v in pending]).cpu()
    names = list(history)[2:]
    for (epoch, i, _), row in zip(pending, values.tolist()):
        if not all(math.isfinite(x) for x in row):
            pending.clear()
            raise Diverged(f"training diverged: a loss became NaN or infinite at epoch {epoch}, "
                           f"iteration {i}; the last checkpoint was left as it was. Try a lower --lr.")
        history["epoch"].append(epoch)
        history["iteration"].append(i)
        for name, x in zip(names, row):
            history[name].append(x)
    pending.clear()


@on_main_process
def write_history_csv(history, path):
    with open(path + ".tmp", "w") as f:
        f.write(",".join(history) + "\n")
        for row in zip(*history.values()):
            f.write(",".join(repr(x) for x in row) + "\n")
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def rng_states():
    """Every RNG the training draws from, as tensors and plain lists (safe to load): a list with
    one entry per process (one entry without torchrun)."""
    state = _rng_state()
    world = rank_and_world()[1]
    if world == 1:
        return [state]
    import torch.distributed as dist
    states = [None] * world
    dist.all_gather_object(states, state)
    return states


def _rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": None, "python": None,
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    version, internal, gauss_next = random.getstate()
    state["python"] = [version, list(internal), gauss_next]
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_states(states):
    states = [states] if isinstance(states, dict) else states  # one process, as earlier versions saved
    state = states[rank_and_world()[0]]
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def atomic_save(obj, path):
    """Write obj so that a crash at any instant leaves either the old file or the new one whole."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def save_checkpoint(outdir, settings, netG, netD, optimizerG, optimizerD, epoch, iteration, fixed_noise, history):
    """Everything needed to continue exactly from here: both nets and optimizers, the position
    (epoch, and iterations done in it), the fixed noise, the history and every RNG state."""
    write_checkpoint({
        "netG": bare(netG).state_dict(), "netD": bare(netD).state_dict(),
        "optimizerG": optimizerG.state_dict(), "optimizerD": optimizerD.state_dict(),
        "epoch": epoch, "iteration": iteration, "fixed_noise": fixed_noise.cpu(),
        "history": history, "rng": rng_states(), "settings": settings}, outdir)


def resume(outdir, settings, netG, netD, optimizerG, optimizerD, device):
    """--resume: restore what save_checkpoint saved, after checking that no setting that changes
    the math differs. Returns (epoch, iteration, fixed_noise, history)."""
    ckpt = load_checkpoint(outdir)
    check_settings(ckpt["settings"], settings)
    bare(netG).load_state_dict(ckpt["netG"])
    bare(netD).load_state_dict(ckpt["netD"])
    optimizerG.load_state_dict(ckpt["optimizerG"])
    optimizerD.load_state_dict(ckpt["optimizerD"])
    set_rng_states(ckpt["rng"])
    return ckpt["epoch"], ckpt["iteration"], ckpt["fixed_noise"].to(device), ckpt["history"]


def write_checkpoint(state, outdir):
    """Save checkpoint.pt; the one it replaces stays as checkpoint.prev.pt."""
    for name in ("netG", "netD"):
        if not all(torch.isfinite(t).all() for t in state[name].values() if t.is_floating_point()):
            raise Diverged(f"training diverged: the weights of {name} became NaN or infinite by epoch "
                           f"{state['epoch']}, iteration {state['iteration']}; the last checkpoint was "
                           f"left as it was. Try a lower --lr.")
    if rank_and_world()[0] != 0:
        return  # under DDP only rank 0 writes (the RNG states of every rank are in `state`)
    path, prev = os.path.join(outdir, "checkpoint.pt"), os.path.join(outdir, "checkpoint.prev.pt")
    if os.path.exists(path):
        try:  # a hard link: checkpoint.pt itself is never missing, not even for an instant
            if os.path.lexists(prev + ".tmp"):  # left by an earlier run stopped at this point
                os.remove(prev + ".tmp")
            os.link(path, prev + ".tmp")
            os.replace(prev + ".tmp", prev)
        except OSError:
            pass
    try:
        atomic_save(state, path)
    except OSError as e:
        raise UserError(f"could not write {path} ({e.strerror or e}); the previous checkpoint is "
                        f"intact. Free some disk space and continue with --resume.") from None


def load_checkpoint(outdir):
    """Load checkpoint.pt safely; under DDP rank 0 reads it and sends it to the other processes."""
    rank, world = rank_and_world()
    if world == 1:
        return _load_checkpoint(outdir)
    import torch.distributed as dist
    box = [_load_checkpoint(outdir) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _load_checkpoint(outdir):
    """Load checkpoint.pt safely (tensors and plain data only); fall back to the previous copy."""
    path, prev = os.path.join(outdir, "checkpoint.pt"), os.path.join(outdir, "checkpoint.prev.pt")
    if not os.path.exists(path):
        raise UserError(f"there is no checkpoint.pt in {outdir}: train first (without --resume or "
                        f"--generate), or point --outdir at a run's folder.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        problem = f"{path} is unreadable, truncated or not a checkpoint ({first_line(e)[:120]})"
    try:
        state = torch.load(prev, map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"{problem}, and there is no good older copy; start a new run with "
                        f"--overwrite.") from None
    os.replace(path, path + ".corrupt")  # kept for inspection, out of the way
    shutil.copy2(prev, path)
    print(f"warning: {problem}; continuing from the older good copy checkpoint.prev.pt "
          f"(epoch {state['epoch']}, iteration {state['iteration']}).")
    return state


# Settings that checkpoints of earlier versions lack, at the value that reproduces those versions.
ADDED_LATER = {"amp": False, "channels_last": False, "compile": False, "processes": 1}


def check_settings(old, new):
    """Refuse to resume under settings that change what is computed."""
    old = {**ADDED_LATER, **old}
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    if changed:
        raise UserError("--resume refused: these settings differ from the checkpoint's and would change "
                        "the training (" + "; ".join(changed) + "); rerun with the old values, or start "
                        "a new run in another --outdir.")


def prepare_outdir(args, script):
    """Make --outdir, refusing to overwrite a run that is already there by accident."""
    outdir = args.outdir or os.path.join("output", script)
    args.outdir = outdir
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise UserError(f"--outdir {outdir} is a file; give a folder.")
    try:
        os.makedirs(os.path.join(outdir, "samples"), exist_ok=True)
        probe = os.path.join(outdir, f".write-test{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise UserError(f"--outdir {outdir} is not writable ({e.strerror}); choose another folder.") from None
    has_run = os.path.exists(os.path.join(outdir, "checkpoint.pt"))
    if has_run and not (args.resume or args.generate or args.overwrite):
        raise UserError(f"{outdir} already holds a run (checkpoint.pt); continue it with --resume, "
                        f"start over with --overwrite, or choose another --outdir.")
    if args.overwrite and not args.resume and rank_and_world()[0] == 0:
        for old in glob.glob(os.path.join(outdir, "samples", "epoch_*.png")):
            os.remove(old)
    return outdir


# ---------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM: finish the iteration, save, and say how to continue
# ---------------------------------------------------------------------------------------------

STOP = {"signal": None}


def catch_stop_signals():
    def handler(signum, frame):
        if STOP["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: quit now (atomic_save keeps the last save whole)
        if STOP["signal"] is None:
            print(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving ... "
                  f"(Ctrl-C again quits without saving)", file=sys.stderr, flush=True)
        STOP["signal"] = signum
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def stop_requested():
    """Has Ctrl-C or SIGTERM arrived? Under DDP the processes agree (any one stopping stops all),
    so that all of them save at the same iteration."""
    if rank_and_world()[1] > 1:
        import torch.distributed as dist
        flag = torch.tensor([STOP["signal"] or 0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and STOP["signal"] is None:
            STOP["signal"] = int(flag.item())
    return STOP["signal"] is not None


def exit_after_stop(epoch, i, outdir):
    argv = [a for a in sys.argv if a != "--overwrite"] + ([] if "--resume" in sys.argv else ["--resume"])
    rank, world = rank_and_world()
    command = shlex.join((["torchrun", f"--nproc_per_node={world}"] if world > 1 else ["python"]) + argv)
    if rank == 0:
        print(f"Stopped at epoch {epoch}, iteration {i}; saved {os.path.join(outdir, 'checkpoint.pt')}. "
              f"Continue with: {command}", file=sys.stderr, flush=True)
    sys.exit(128 + STOP["signal"])


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------

def to_pixels(images):
    """[-1, 1] -> [0, 1]."""
    return images.detach().float().cpu().add(1).div(2).clamp(0, 1)


@on_main_process
def save_grid(images, path, nrow=8):
    vutils.save_image(to_pixels(images), path, nrow=nrow, padding=2)


@on_main_process
def save_images(images, folder):
    """One PNG file per image, at the data's resolution."""
    os.makedirs(folder, exist_ok=True)
    for k, image in enumerate(to_pixels(images)):
        vutils.save_image(image, os.path.join(folder, f"{k:05d}.png"))


def write_gif(pngs, path, labels=None, ms_per_frame=400):
    """A GIF of the given PNG files, each frame labelled (e.g. with its epoch).

    Each frame is reduced to a palette once and kept in memory, so rewriting the GIF after every
    epoch costs one new frame, not the whole run again.
    """
    from PIL import Image, ImageDraw
    frames = []
    for k, png in enumerate(pngs):
        key = (png, os.path.getmtime(png), labels[k] if labels else None)
        if key not in _gif_frames:
            image = Image.open(png).convert("RGB")
            if labels:
                draw = ImageDraw.Draw(image)
                draw.rectangle([0, 0, 6 * len(labels[k]) + 6, 13], fill=(0, 0, 0))
                draw.text((3, 1), labels[k], fill=(255, 255, 0))
            _gif_frames[key] = image.quantize(colors=256, dither=Image.Dither.NONE)
        frames.append(_gif_frames[key])
    durations = [ms_per_frame] * (len(frames) - 1) + [ms_per_frame * 4]  # linger on the result
    tmp = f"{path}.tmp{os.getpid()}.gif"
    frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    os.replace(tmp, path)


_gif_frames = {}


def write_progress_gif(outdir):
    pngs = sorted(glob.glob(os.path.join(outdir, "samples", "epoch_*.png")))
    labels = [f"epoch {int(os.path.basename(p)[6:10])}" for p in pngs]
    write_gif(pngs, os.path.join(outdir, "progress.gif"), labels)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def smooth(values, weight=0.98):
    """Exponential moving average, as TensorBoard smooths curves."""
    out, avg = [], None
    for k, v in enumerate(values):
        avg = v if avg is None else weight * avg + (1 - weight) * v
        out.append(avg)
    return out


def plot_curves(history, names, path, title, ylabel):
    """Raw curves (faint) and their smoothed versions over iterations, epochs marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    n = len(history["epoch"])
    every = max(1, n // 10_000)  # a plot has no use for more points than pixels
    steps = range(0, n, every)
    for name in names:
        line, = ax.plot(steps, history[name][::every], alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth(history[name])[::every], color=line.get_color(), label=name)
    epoch_starts = [k for k in range(1, n) if history["epoch"][k] != history["epoch"][k - 1]]
    marked = len(epoch_starts) <= 60
    for k in epoch_starts if marked else []:
        ax.axvline(k, color="grey", linewidth=0.5, alpha=0.5)
    if not marked:  # too many epochs for lines: label the x axis in epochs instead
        ticks = epoch_starts[::max(1, len(epoch_starts) // 10)]
        ax.set_xticks(ticks, [str(history["epoch"][k]) for k in ticks])
    ax.set(title=title, ylabel=ylabel,
           xlabel="iterations (grey lines: epoch starts)" if marked else "epochs done")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@on_main_process
def real_vs_fake(real, fake, path, nrow=8):
    """Real images beside fake ones, like the DCGAN tutorial's last figure."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(15, 7.5))
    for ax, images, title in zip(axes, (real, fake), ("Real Images", "Fake Images")):
        grid = vutils.make_grid(to_pixels(images), nrow=nrow, padding=2)
        ax.imshow(grid.permute(1, 2, 0).numpy())
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@on_main_process
def write_epoch_outputs(outdir, history, loss_names, score_names):
    """Everything rewritten after each epoch: CSV, loss plot, score plot, GIF."""
    write_history_csv(history, os.path.join(outdir, "history.csv"))
    plot_curves(history, loss_names, os.path.join(outdir, "losses.png"),
                "Generator and Discriminator Loss During Training", "loss")
    if score_names:
        plot_curves(history, score_names, os.path.join(outdir, "scores.png"),
                    "Discriminator outputs: D(x) on real, D(G(z)) on fake", "mean D output")
    write_progress_gif(outdir)


def slerp(a, b, t):
    """Spherical interpolation between noise vectors (keeps them at a typical length)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def generate(netG, nz, noise_shape, args, outdir):
    """--generate N [--interpolate]: images from a trained generator, nothing trained."""
    gen = torch.Generator().manual_seed(args.seed)
    device = next(netG.parameters()).device
    folder = os.path.join(outdir, "generated")
    with torch.no_grad():
        fake = netG(torch.randn(args.generate, nz, generator=gen).view(args.generate, *noise_shape).to(device))
    save_images(fake, folder)
    save_grid(fake, os.path.join(folder, "grid.png"), nrow=int(math.ceil(math.sqrt(args.generate))))
    print(f"Wrote {args.generate} images and grid.png to {folder}/")
    if args.interpolate:
        rows, steps = 8, 10
        ends = torch.randn(rows + 1, nz, generator=gen)
        t = torch.linspace(0, 1, steps).view(1, steps, 1)
        z = slerp(ends[:-1].unsqueeze(1), ends[1:].unsqueeze(1), t)  # rows x steps x nz
        with torch.no_grad():
            walk = netG(z.reshape(rows * steps, *noise_shape).to(device))
        save_grid(walk, os.path.join(folder, "interpolation.png"), nrow=steps)
        frames = []
        for k, image in enumerate(walk):  # one continuous walk: row after row
            if k >= steps and k % steps == 0:
                continue  # a row starts where the row before it ended
            png = os.path.join(folder, f".walk{k:03d}.png")
            vutils.save_image(to_pixels(image), png)
            frames.append(png)
        write_gif(frames, os.path.join(folder, "interpolation.gif"), ms_per_frame=120)
        for png in frames:
            os.remove(png)
        print(f"Wrote interpolation.png and interpolation.gif to {folder}/")


def progress(items, data, args, epoch, start):
    """A progress bar for one epoch with images/s and the ETA of the epoch and of the whole run.

    Only on a terminal: in a log file or CI the tutorials' own log lines are the progress.
    """
    from tqdm import tqdm
    total = n_batches(data, args.batch_size)
    bar = tqdm(items, total=total, initial=start, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch",
               leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())
    t0 = time.time()
    for k, item in enumerate(bar, 1):
        yield item
        if k % 10 == 0:
            rate = k / (time.time() - t0)  # batches per second
            left = (args.epochs - epoch - 1) * total + total - start - k
            bar.set_postfix_str(f"{rate * args.batch_size:.0f} img/s, run ETA {clock(left / rate)}", refresh=False)
    progress.seconds, progress.batches = time.time() - t0, total - start


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def log(line):
    """print() that keeps a progress bar intact."""
    from tqdm import tqdm
    tqdm.write(line)


def epoch_line(epoch, args, data):
    """One line per epoch, for logs: time, speed and how long the run has left."""
    secs, nb = progress.seconds, max(progress.batches, 1)
    left = (args.epochs - epoch - 1) * n_batches(data, args.batch_size) * secs / nb
    log(f"epoch {epoch + 1}/{args.epochs} done in {secs:.2f} s "
        f"({min(nb * args.batch_size, data['n']) / max(secs, 1e-9):.0f} img/s); run ETA {clock(left)}")


@on_main_process
def summary(outdir, seconds, history, loss_names):
    last = ", ".join(f"{n} {history[n][-1]:.4f}" for n in loss_names) if history["epoch"] else "no iterations"
    print(f"Done in {clock(seconds)}; final {last}. Outputs in {outdir}/: samples/, progress.gif, "
          f"losses.png, history.csv, checkpoint.pt and the figures.")
