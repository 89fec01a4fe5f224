"""The flags every script has, with the checks argparse makes on each value."""
import argparse
import math

# --seed is used by python's, numpy's and torch's generators: numpy's seed() takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1


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


def seed_number(text):
    value = int(text) if text.isdigit() else None
    if value is None or value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED} (the range every "
                                         f"random generator used here accepts), got {text!r}")
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


def add_common_args(parser, *, dataroot, epochs, batch_size, workers, seed, mnist=False):
    """The flags every script has; the defaults are each tutorial's own. mnist: also the flags of
    the sample-quality measure, which needs the reference digit classifier."""
    a = parser.add_argument
    a("--dataroot", default=dataroot, help="dataset folder")
    a("--outdir", default=None, help="output folder (default: output/<script name>)")
    a("--epochs", type=positive_int, default=epochs, help="number of training epochs")
    a("--batch-size", type=positive_int, default=batch_size, help="images per batch")
    a("--workers", type=nonnegative_int, default=workers,
      help="DataLoader worker processes (used to decode the dataset, and with --stream)")
    a("--seed", type=seed_number, default=seed, help="random seed (with --generate: the seed of the noise)")
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
    if mnist:
        a("--evaluate", type=positive_int, nargs="?", const=10_000, metavar="N",
          help="train nothing: measure the samples of the run in --outdir (N generated against N real "
               "digits, default 10000): FD and the share of each digit, by a reference classifier")
        a("--eval-every", type=positive_int, metavar="K",
          help="during training, measure the samples every K epochs (quality.csv, quality.png)")
    # Opt-in speed-ups that change the numerics (a little), so they are off by default:
    a("--amp", action="store_true",
      help="mixed precision: run the networks in bfloat16 autocast (losses stay in float32)")
    a("--channels-last", action="store_true", help="channels-last memory format for the conv nets")
    a("--compile", action="store_true", help="torch.compile the networks (slow first iterations)")
    a("--cudnn-benchmark", action="store_true",
      help="let cuDNN pick the fastest kernels on a GPU: faster, but no longer bit-reproducible")


# Settings that do not change what is computed: a resumed run may change these freely.
NOT_MATH = {"dataroot", "outdir", "epochs", "workers", "device", "ngpu", "resume", "overwrite",
            "checkpoint_every", "generate", "interpolate", "stream", "cudnn_benchmark", "evaluate",
            "eval_every", "export_real"}
