"""Ctrl-C and SIGTERM while training: finish the iteration, save, say how to continue.

    signals = StopSignals()        # from now on the first Ctrl-C / SIGTERM only asks to stop
    ...
    if signals.signum: ...         # the training loop checks between iterations, saves and exits
    signals.restore()              # the handlers that were there before

A second Ctrl-C while a stop is under way quits at once (QuitNow), without that save: the last
checkpoint stays whole, since checkpoints are written to a temporary file first.
"""
import os
import shlex
import signal
import sys

from .errors import QuitNow


class StopSignals:
    def __init__(self):
        self.signum = None  # the signal that asked to stop, once one did
        self.old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def on_signal(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise QuitNow  # a second Ctrl-C: quit now
        if self.signum is None:  # (os.write: a print() here could land in the middle of another one)
            say(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving ... "
                f"(Ctrl-C again quits without saving)\n")
        self.signum = signum

    def restore(self):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old[0])
            signal.signal(signal.SIGTERM, self.old[1])
            self.old = None


def say(text):
    try:
        os.write(2, text.encode())
    except OSError:  # stderr closed: nobody to tell
        pass


def agree(device, *flags):
    """Under torchrun: the largest of each flag (a number, or a tensor on the device) over all
    processes, so that one process stopping, or diverging, stops all of them at the same iteration.
    One collective and one host sync, so the training calls it every few iterations, at the same
    ones on every process."""
    import torch
    import torch.distributed as dist
    values = torch.stack([f.float().reshape(()) if torch.is_tensor(f) else torch.full((), float(f), device=device)
                          for f in flags])
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values.tolist()


def continue_command(world):
    """The command that continues a stopped run: this one, with --resume (and without --overwrite)."""
    argv = [a for a in sys.argv if a != "--overwrite"] + ([] if "--resume" in sys.argv else ["--resume"])
    if world == 1:
        return shlex.join(["python"] + argv)
    if int(os.environ.get("LOCAL_WORLD_SIZE", world)) == world:  # torchrun on one machine
        return shlex.join(["torchrun", "--standalone", f"--nproc_per_node={world}"] + argv)
    return "the same torchrun command on every machine, for " + shlex.join(argv)
