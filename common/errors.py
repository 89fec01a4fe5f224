"""The two kinds of failure a user meets, and the entry point that turns them into one sentence."""
import errno
import os
import signal
import sys


class UserError(Exception):
    """A mistake the user can fix. The scripts print it as one sentence, with no traceback."""


class Diverged(Exception):
    """A loss, an output of D or a weight became NaN or infinite."""


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (where it saves and stops instead): the command ends as on
    Ctrl-C, through every cleanup on the way, so that no temporary file or folder is left."""


def raise_terminated(signum, frame):
    raise Terminated


def run_script(main):
    """Call main(), turning what a user can run into into one sentence and an exit code: 1 for a
    user error, 3 for a diverged run, 130 for Ctrl-C, 143 for SIGTERM. Output closed under the run
    (`| head`, a `tee` that died) costs nothing: what is printed after that is dropped, and
    training goes on."""
    # Each script starts by letting Ctrl-C end it at once while torch loads; from here Ctrl-C and
    # SIGTERM raise exceptions, which the training turns into "save and stop".
    old_handlers = (signal.signal(signal.SIGINT, signal.default_int_handler),
                    signal.signal(signal.SIGTERM, raise_terminated))
    old_streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ClosedPipeSafe(sys.stdout), ClosedPipeSafe(sys.stderr)
    try:
        main()
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
        if "DataLoader worker" not in str(e):
            raise
        # a process that reads images died (out of memory, killed, ...)
        print(f"error: {first_line(e)}; nothing saved is lost. Rerun (with --resume once a checkpoint is "
              f"written), with fewer --workers under --stream (0 reads in the main process).", file=sys.stderr)
        sys.exit(1)
    except Terminated:
        print("\nstopped by SIGTERM outside the training loop: nothing was left unsaved.", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:  # (outside the training loop, which turns Ctrl-C into a save and a stop, or
        # while the pictures are redrawn as the run ends: they are drawn from what was saved)
        print("\ninterrupted outside the training loop: nothing was left unsaved.", file=sys.stderr)
        sys.exit(130)
    finally:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = old_streams
        signal.signal(signal.SIGINT, old_handlers[0])  # (a run that failed may have left its own)
        signal.signal(signal.SIGTERM, old_handlers[1])


class ClosedPipeSafe:
    """sys.stdout or sys.stderr, but a reader that went away (BrokenPipeError) silences it instead
    of ending the run: the file descriptor is pointed at os.devnull, so Python's own flush at exit
    is quiet too. File names that are not UTF-8 are written escaped (see shown)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        self.unless_gone(lambda: self.stream.write(shown(text)), 0)
        return len(text)

    def flush(self):
        self.unless_gone(lambda: self.stream.flush(), 0)

    def unless_gone(self, call, n):
        try:
            return call()
        except BrokenPipeError:
            return self.silence(n)
        except ValueError:  # the stream itself was closed (and not a text it cannot encode)
            if not self.stream.closed:
                raise
            return self.silence(n)

    def silence(self, n):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (a test's capture): dropping the text is enough
        self.stream = open(os.devnull, "w")
        return n

    def __getattr__(self, name):  # isatty(), fileno(), encoding ...
        return getattr(self.stream, name)


def shown(text):
    """text with the bytes of a file name that are not UTF-8 written as \\xe9: Python holds such a
    name (Latin-1 from an old archive, say) with surrogate escapes, U+DC80 to U+DCFF for the bytes
    0x80 to 0xFF, which a UTF-8 terminal either refuses (UnicodeEncodeError) or shows mangled."""
    if text.isascii():
        return text
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in text)


def cannot_write(e):
    """What an OSError of a write means for the user, and what to do: "(No space left on device:
    free some disk space)"."""
    fix = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some of your disk quota",
           errno.EFBIG: "the file-size limit (ulimit -f) is smaller than the file: raise it",
           errno.EROFS: "the disk is read-only", errno.EACCES: "check the folder's permissions"}
    return f"({e.strerror or e}: {fix.get(e.errno, 'check the disk')})"


def first_line(e):
    return str(e).strip().splitlines()[0] if str(e).strip() else ""
