"""Faults caused from outside the scripts, for the tests: the scripts and common hold no test hooks.

In-process, a test patches common.DataLoader.__iter__ with faulty_iter(...). As a process:

    python tests/faults.py [--signal-at EPOCH:BATCH[/SIGINT,SIGINT]] [--nan-at EPOCH:BATCH]
                           [--file-size-limit-at EPOCH:BATCH/BYTES] [--signal-during-save N/SIGINT]
                           [--draw-every SECONDS] [--agree-every N] [--start-method METHOD] SCRIPT.py ARGS...

runs SCRIPT.py's main(ARGS) as `python SCRIPT.py ARGS` would (torchrun can start it the same way).
The faults are real: the process sends itself the signals as that batch begins (or while a
n-th checkpoint is being written), that batch is made of NaNs, or from that batch on the process may
write no file beyond BYTES (RLIMIT_FSIZE, as `ulimit -f` sets it: a write past it fails with
EFBIG, as on a full disk with ENOSPC). --draw-every and --agree-every set the run's intervals
(common.pictures.DRAW_EVERY, common.run.AGREE_EVERY), so that what they trigger happens at toy size.
--start-method sets how multiprocessing starts processes (fork, spawn, forkserver: the
DataLoader's workers take it), as the platform's default would.
"""
import argparse
import importlib
import os
import resource
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.data import DataLoader  # noqa: E402

original_iter = DataLoader.__iter__


def faulty_iter(signal_at=None, nan_at=None, file_size_limit_at=None):
    """A DataLoader.__iter__ that signals this process as batch "epoch:i" begins
    ("epoch:i/SIGTERM", "epoch:i/SIGINT,SIGINT" for Ctrl-C pressed twice), NaNs that batch, or
    limits the size of the files this process may write from that batch on ("epoch:i/BYTES")."""
    def __iter__(self):
        for i, (images, labels) in enumerate(original_iter(self), self.start):
            here = f"{self.epoch}:{i}"
            if signal_at and signal_at.partition("/")[0] == here:
                for name in (signal_at.partition("/")[2] or "SIGINT").split(","):
                    os.kill(os.getpid(), getattr(signal, name))
            if nan_at == here:
                images = images * float("nan")
            if file_size_limit_at and file_size_limit_at.partition("/")[0] == here:
                limit = int(file_size_limit_at.partition("/")[2])
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            yield images, labels
    return __iter__


def signal_during_save(which):
    """common.checkpoints.torch_save that sends this process a signal once the n-th save of the
    process has begun writing ("n/SIGINT")."""
    import common.checkpoints
    real, n, name = common.checkpoints.torch_save, int(which.partition("/")[0]), which.partition("/")[2]
    saves = []

    def torch_save(obj, f):
        saves.append(f)
        if len(saves) == n:  # (its file is open: the save has begun)
            os.kill(os.getpid(), getattr(signal, name))
        return real(obj, f)
    return torch_save


PARSER = argparse.ArgumentParser()
for flag in ("--signal-at", "--nan-at", "--file-size-limit-at", "--signal-during-save"):
    PARSER.add_argument(flag)
PARSER.add_argument("--draw-every", type=float)
PARSER.add_argument("--agree-every", type=int)
PARSER.add_argument("--start-method", choices=["fork", "spawn", "forkserver"])


def run(script, argv, faults=()):
    """Run SCRIPT.py's main(argv) in this process as `python SCRIPT.py argv` would, with the faults
    (command-line words, as above) in place."""
    faults = PARSER.parse_args([str(f) for f in faults])
    DataLoader.__iter__ = faulty_iter(faults.signal_at, faults.nan_at, faults.file_size_limit_at)
    import common
    if faults.signal_during_save:
        common.checkpoints.torch_save = signal_during_save(faults.signal_during_save)
    if faults.draw_every is not None:
        common.pictures.DRAW_EVERY = faults.draw_every
    if faults.agree_every is not None:
        common.run.AGREE_EVERY = faults.agree_every
    if faults.start_method:
        import multiprocessing
        multiprocessing.set_start_method(faults.start_method, force=True)
    sys.argv = [script, *argv]  # so that "Continue with: ..." names the script itself
    module = importlib.import_module(os.path.basename(script)[:-3])
    common.run_script(lambda: module.main(argv))


if __name__ == "__main__":
    script = next(k for k, word in enumerate(sys.argv) if word.endswith(".py") and k > 0)
    run(sys.argv[script], sys.argv[script + 1:], sys.argv[1:script])
