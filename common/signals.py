"""Ctrl-C and SIGTERM while training: finish the iteration, save, say how to continue.

    signals = StopSignals()        # from now on the first Ctrl-C / SIGTERM only asks to stop
    ...
    if signals.signum: ...         # the training loop checks between iterations, saves and stops,
    signals.restore()              # giving back the handlers that were there before (before the
                                   # pictures are redrawn: from then on, Ctrl-C quits at once)

Ctrl-C pressed again (a common habit) does not lose the stop's save: while these handlers are
there, a save is under way or due, and a further Ctrl-C only says so.

    with signals_held(): ...       # a few lines that must not be cut in the middle (outside training)
"""
import contextlib
import os
import shlex
import signal
import sys


class StopSignals:
    def __init__(self):
        self.signum = None  # the signal that asked to stop, once one did
        self.told = False  # that the save is still coming, once a further Ctrl-C came
        self.old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def on_signal(self, signum, frame):
        # (os.write: a print() here could land in the middle of another one)
        if self.signum is None:
            self.signum = signum
            say(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving checkpoint.pt ...\n")
        elif signum == signal.SIGINT and not self.told:
            self.told = True
            say("\nStill saving: the run stops as soon as checkpoint.pt is written (Ctrl-C after that quits "
                "at once; Ctrl-\\ kills it now, and loses what was trained since the last save).\n")

    def restore(self):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old[0])
            signal.signal(signal.SIGTERM, self.old[1])
            self.old = None


@contextlib.contextmanager
def signals_held():
    """Ctrl-C and SIGTERM that come during the block act when it is done, as they would have then.
    (Held by handlers of Python's, not by the OS's signal mask: that holds a signal for one thread
    only, and the process's other threads, torch's among them, would take it.)"""
    came = []
    old = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if came:  # (SIGTERM first if both came: a scheduler's, the command's end)
            signal.raise_signal(signal.SIGTERM if signal.SIGTERM in came else came[0])


@contextlib.contextmanager
def deaf_children():
    """Processes started during the block (the worker processes that read the images) start with
    Ctrl-C and SIGTERM blocked, for good: a terminal's Ctrl-C reaches every process of the command,
    and a worker that spawn or forkserver is still starting (it imports torch: seconds) would die
    of it with a traceback, or torch report it as a failure. The command's own process stops them.
    (Blocked in this thread only, whose signal mask a new process takes; in this process another
    thread takes such a signal meanwhile, and its handler runs as before.)"""
    if not hasattr(signal, "pthread_sigmask"):  # (Windows: no such signals from a terminal)
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def say(text):
    with contextlib.suppress(OSError):  # (stderr closed: nobody to tell)
        os.write(2, text.encode())


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
        return shell_words(["python"] + argv)
    if int(os.environ.get("LOCAL_WORLD_SIZE", world)) == world:  # torchrun on one machine
        return shell_words(["torchrun", "--standalone", f"--nproc_per_node={world}"] + argv)
    return "the same torchrun command on every machine, for " + shell_words(argv)


def shell_words(argv):
    """shlex.join(argv), but a word whose bytes are not UTF-8 (a Latin-1 folder name, say) written as
    bash's $'r\\xe9sultats', which gives those bytes back when pasted."""
    def word(arg):
        raw = os.fsencode(arg)
        try:
            raw.decode("utf-8")
            return shlex.quote(arg)
        except UnicodeDecodeError:
            return "$'" + "".join(chr(b) if 32 <= b < 127 and b not in b"'\\" else f"\\x{b:02x}" for b in raw) + "'"
    return " ".join(word(a) for a in argv)
