"""The flags every script has, the checks argparse makes on each value, and the one rule a flag
carries for --resume: whether it changes the math.

A flag changes the math unless it is made with changes_math=False. --resume refuses a run whose
math flags differ from its checkpoint's, naming each; a run folder from before a flag existed
resumes at that flag's default only. So adding a flag to one script is one add_argument() call:

    parser.add_argument("--loss", default="bce", ...)                        # changes the math
    parser.add_argument("--tensorboard", action="store_true", changes_math=False, ...)
"""
import argparse
import math
import os

from .errors import UserError

# --seed is used by python's, numpy's and torch's generators: numpy's seed() takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose add_argument() also takes changes_math (default True). The parsed
    flags carry `math_defaults`: each flag that changes the math, with its default."""

    def add_argument(self, *names, changes_math=True, **kwargs):
        action = super().add_argument(*names, **kwargs)
        action.changes_math = changes_math
        return action

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        if getattr(parsed, "interpolate", False) and not parsed.generate:  # the one rule between common flags
            raise UserError("--interpolate walks through the latent space of --generate's images; add "
                            "--generate N, or leave out --interpolate.")
        parsed.math_defaults = {a.dest: a.default for a in self._actions
                                if getattr(a, "changes_math", False) and hasattr(parsed, a.dest)}  # (not --help)
        return parsed


def number(convert, ok, must_be):
    """A flag's type: convert(text) (int or float), refused in one sentence unless ok(value)."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {must_be}, got {text!r}")
        return value
    return parse


positive_int = number(int, lambda v: v > 0, "a positive whole number")
nonnegative_int = number(int, lambda v: v >= 0, "0 or a positive whole number")
seed_number = number(int, lambda v: 0 <= v <= MAX_SEED, f"a whole number from 0 to {MAX_SEED} (the range every "
                                                        f"random generator used here accepts)")
positive_float = number(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
beta = number(float, lambda v: 0 <= v < 1, "in [0, 1)")


def folder(text):
    """A folder given on the command line: ~ is the home folder, as the shell would expand it
    (it does not in --outdir=~/runs)."""
    return os.path.expanduser(text)


def add_common_args(parser, *, script, dataroot, epochs, batch_size, workers, seed, measured=False):
    """The flags every script has; the defaults are each tutorial's own. measured: --eval-every is
    on by default (a tenth of --epochs), where measuring costs a default run little (QUALITY.md)."""
    a = parser.add_argument  # (each flag that leaves the math as it is says so: changes_math=False)
    a("--dataroot", changes_math=False, type=folder, default=dataroot,
      help="dataset folder (its contents are what a resume checks, not its path)")
    a("--outdir", changes_math=False, type=folder, default=os.path.join("output", script), help="output folder")
    a("--epochs", changes_math=False, type=positive_int, default=epochs, help="number of training epochs")
    a("--batch-size", type=positive_int, default=batch_size, help="images per batch")
    a("--workers", changes_math=False, type=nonnegative_int, default=workers,
      help="DataLoader worker processes that read and decode the images every epoch with --stream (the "
           "first decode of an image folder takes every core)")
    a("--seed", type=seed_number, default=seed,
      help="random seed (with --generate: the seed of the noise)")
    a("--device", changes_math=False, choices=["auto", "cpu", "cuda", "mps"], default="auto",
      help="where to train: auto picks cuda, then mps, then the cpu")
    a("--resume", changes_math=False, action="store_true", help="continue the run in --outdir from its checkpoint.pt")
    a("--overwrite", changes_math=False, action="store_true",
      help="start a new run even if --outdir already holds one (the old run's files are deleted)")
    a("--checkpoint-every", changes_math=False, type=positive_int, default=500,
      help="also save checkpoint.pt every this many iterations (besides every epoch end)")
    a("--generate", changes_math=False, type=positive_int, metavar="N",
      help="train nothing: write N images from the run's generator (--generator chooses which)")
    a("--interpolate", changes_math=False, action="store_true",
      help="with --generate: also write a walk through the latent space (grid and GIF)")
    a("--stream", changes_math=False, action="store_true",
      help="read images from disk every epoch, as the tutorial does, instead of holding the "
           "decoded dataset in memory (for datasets too big for memory; same results)")
    a("--fake-data", type=positive_int, nargs="?", const=1024, metavar="N",
      help="train on N random images (default 1024) instead of a dataset: a smoke run that "
           "needs no download")
    a("--evaluate", changes_math=False, type=positive_int, nargs="?", const=10_000, metavar="N",
      help="train nothing: measure N samples of the run's generator against N real images (default 10000): "
           "digits by FD and digit shares of a reference classifier, faces by FID")
    a("--eval-every", changes_math=False, type=nonnegative_int, metavar="K", default=None if measured else 0,
      help="during training, measure the samples every K epochs (quality.csv, quality.png) and keep the best "
           "generator in best.pt; 0: never"
           + (" (default: a tenth of --epochs, none under 10 epochs)" if measured else ""))
    a("--generator", changes_math=False, choices=["last", "best", "average"],
      help="which generator --generate, --interpolate and --evaluate use: the last, the best kept (best.pt) or the "
           "average (--ema); default: the best where the run kept one, else the last")
    a("--ema", action="store_true",
      help="also keep an exponential moving average of G's weights (StyleGAN2-ADA's G_ema, common/average.py), "
           "measured beside G by --eval-every; training is unchanged")
    # Opt-in speed-ups that change the numerics (a little), so they are off by default:
    a("--amp", action="store_true",
      help="mixed precision: run the networks in bfloat16 autocast (D's last sigmoid and the losses "
           "stay in float32)")
    a("--channels-last", action="store_true",
      help="channels-last memory format for the conv nets")
    a("--compile", action="store_true", help="torch.compile the networks (slow first iterations)")
    a("--cudnn-benchmark", changes_math=False, action="store_true",
      help="let cuDNN pick the fastest kernels on a GPU: faster, but no longer bit-reproducible")
