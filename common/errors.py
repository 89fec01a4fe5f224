"""The two kinds of failure a user meets, and the wrapper that turns them into one sentence."""
import sys
import traceback


class UserError(Exception):
    """A mistake the user can fix. The scripts print it as one sentence, with no traceback."""


class Diverged(Exception):
    """A loss or a weight became NaN or infinite."""


class QuitNow(KeyboardInterrupt):
    """Ctrl-C pressed again while a stop was already under way: quit without saving."""


def run_script(main):
    """Call main(), turning the mistakes a user can make into one sentence and an exit code:
    1 for a user error, 3 for a diverged run, 130 for Ctrl-C."""
    try:
        main()
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
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
        run = training_run(e)
        where = f" at epoch {run.epoch}, iteration {run.batch}" if run else ""
        if run:
            run.close(diverged=True)  # the pictures show the run up to the last good iteration
        print(f"error: training diverged: D's output became NaN{where}; the last checkpoint was left as it "
              f"was. Try a lower --lr.", file=sys.stderr)
        sys.exit(3)
    except QuitNow:
        print("\nquit on a second Ctrl-C without saving this iteration; checkpoint.pt still holds the "
              "last save whole. Continue from it with --resume.", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("\ninterrupted before training started; nothing to save.", file=sys.stderr)
        sys.exit(130)


def training_run(error):
    """The Run that was training when `error` came out of the script's loop (a local of one of the
    frames it passed through), or None. Errors raised inside the Run itself are handled there."""
    from .run import Run
    for frame, _ in traceback.walk_tb(error.__traceback__):
        for value in frame.f_locals.values():
            if isinstance(value, Run):
                return value
    return None


def first_line(e):
    return str(e).strip().splitlines()[0] if str(e).strip() else ""
