"""Faults injected from outside the scripts, for the tests: the scripts and common hold no test hooks.

In-process, a test patches common.DataLoader.__iter__ with faulty_iter(...). As a process:

    python tests/faults.py [--signal-at EPOCH:BATCH[/SIGINT,SIGINT]] [--nan-at EPOCH:BATCH] SCRIPT.py ARGS...

runs SCRIPT.py's main(ARGS) as `python SCRIPT.py ARGS` would (torchrun can start it the same way),
with the process sending itself the signals as that batch begins, or that batch made of NaNs.
"""
import argparse
import importlib
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.data import DataLoader  # noqa: E402

original_iter = DataLoader.__iter__


def faulty_iter(signal_at=None, nan_at=None):
    """A DataLoader.__iter__ that signals this process as batch "epoch:i" begins
    ("epoch:i/SIGTERM", "epoch:i/SIGINT,SIGINT" for Ctrl-C pressed twice), or NaNs that batch."""
    def __iter__(self):
        for i, (images, labels) in enumerate(original_iter(self), self.start):
            here = f"{self.epoch}:{i}"
            if signal_at and signal_at.partition("/")[0] == here:
                for name in (signal_at.partition("/")[2] or "SIGINT").split(","):
                    os.kill(os.getpid(), getattr(signal, name))
            if nan_at == here:
                images = images * float("nan")
            yield images, labels
    return __iter__


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--signal-at")
    parser.add_argument("--nan-at")
    parser.add_argument("script")
    faults, argv = parser.parse_known_args()
    DataLoader.__iter__ = faulty_iter(faults.signal_at, faults.nan_at)
    sys.argv = [faults.script, *argv]  # so that "Continue with: ..." names the script itself
    module = importlib.import_module(os.path.basename(faults.script)[:-3])
    import common
    common.run_script(lambda: module.main(argv))
