"""Ctrl-C and SIGTERM while training: finish the iteration, save, say how to continue.

    signals = StopSignals()        # from now on the first Ctrl-C / SIGTERM only asks to stop
    ...
    if signals.signum: ...         # the training loop checks between iterations, saves and exits
    signals.restore()              # the handlers that were there before

A second Ctrl-C while a stop is under way quits at once (QuitNow), without that save: the last
checkpoint stays whole, since checkpoints are written to a temporary file first.
"""
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
        if self.signum is None:
            print(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving ... "
                  f"(Ctrl-C again quits without saving)", file=sys.stderr, flush=True)
        self.signum = signum

    def restore(self):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old[0])
            signal.signal(signal.SIGTERM, self.old[1])
            self.old = None


def agree(device, *flags):
    """Under torchrun: the largest of each flag over all processes (so one process stopping, or
    diverging, stops all of them at the same iteration). One collective and one host sync, so the
    training calls it every few iterations, at the same ones on every process."""
    import torch
    import torch.distributed as dist
    values = torch.stack([torch.as_tensor(f, device=device).float().reshape(()) for f in flags])
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values.tolist()
