"""Ctrl-C and SIGTERM while training: finish the iteration, save, say how to continue.

    signals = StopSignals()        # from now on the first Ctrl-C / SIGTERM only asks to stop
    ...
    if signals.signum: ...         # the training loop checks between iterations, saves,
    signals.stop_saved = True      # says that the stop's save is written,
    signals.restore()              # and gives back the handlers that were there before

Ctrl-C pressed again (a common habit) does not lose the stop's save: until it is written, each
further Ctrl-C only says that it is coming. Once it is, a Ctrl-C quits at once (QuitNow), without
waiting for the pictures to be redrawn.
"""
import os
import shlex
import signal
import sys

from .errors import QuitNow


class StopSignals:
    def __init__(self):
        self.signum = None  # the signal that asked to stop, once one did
        self.stop_saved = False  # the checkpoint of that stop is written: a Ctrl-C may quit at once
        self.told = False
        self.old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def on_signal(self, signum, frame):
        # (os.write: a print() here could land in the middle of another one)
        if self.signum is None:
            self.signum = signum
            say(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving checkpoint.pt ...\n")
        elif signum == signal.SIGINT and self.stop_saved:
            raise QuitNow  # Ctrl-C again once the save is written: quit now
        elif signum == signal.SIGINT and not self.told:
            self.told = True
            say("\nStill saving: the run stops as soon as checkpoint.pt is written (Ctrl-C after that quits "
                "at once).\n")

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
