"""--outdir: one command at a time, and one run in it.

    with claim(outdir):            # --generate, --evaluate, --export-real
        ...
    folder = claim(outdir)         # a training run: common.Run holds it until the run ends
    ...
    folder.release()

While a command holds the folder, an OS lock on <outdir>/.lock (which holds its process id) turns
any other command for that folder away. The lock dies with its process (also on kill -9 or a
power cut), so a folder is never left locked; release() also removes .lock, and the folder itself
if the command made it and wrote nothing there.
"""
import contextlib
import gc
import os
import shutil

from .errors import UserError

try:
    import fcntl  # POSIX; on Windows the outdir is not locked
except ImportError:
    fcntl = None

# What a run writes into --outdir; --overwrite deletes these of the old run (and nothing else).
RUN_FILES = ["checkpoint.pt", "checkpoint.prev.pt", "checkpoint.pt.corrupt", "history.csv", "losses.png",
             "scores.png", "progress.gif", "real_vs_fake.png", "training_images.png", "real_images.png",
             "quality.csv", "quality.png", "evaluation.png", "evaluation.json"]
RUN_FOLDERS = ["samples", "generated", "real"]


class claim:
    """Hold --outdir for this process (see the module's docstring); a context manager, or call
    release() when done."""

    def __init__(self, outdir):
        self.outdir, self.lock = outdir, None
        if os.path.exists(outdir) and not os.path.isdir(outdir):
            raise UserError(f"--outdir {outdir} is a file; give a folder.")
        self.made = not os.path.exists(outdir)
        try:
            for attempt in range(3):
                os.makedirs(outdir, exist_ok=True)
                try:
                    self.lock = lock_folder(outdir)
                    break
                except FileNotFoundError:  # another command removed the folder it had made: make it again
                    continue
        except OSError as e:
            self.release()
            raise UserError(f"--outdir {outdir} is not writable ({e.strerror}); choose another folder.") from None

    def release(self):
        """Give the folder back: unlock, remove .lock, and the folder if this command made it empty."""
        if self.lock is not None:
            try:
                os.remove(os.path.join(self.outdir, ".lock"))  # before unlocking: see lock_folder
            except OSError:
                pass
            self.lock.close()
            self.lock = None
        if self.made and os.path.isdir(self.outdir) and not os.listdir(self.outdir):
            os.rmdir(self.outdir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_folder(outdir):
    """An exclusive OS lock on <outdir>/.lock, which then holds this process's id; another holder
    is refused in one sentence that names it."""
    if fcntl is None:
        return None
    path = os.path.join(outdir, ".lock")
    for attempt in range(3):
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            if holder == str(os.getpid()) and attempt == 0:
                gc.collect()  # an earlier run in this same process (tests) whose lock is not yet freed
                continue
            raise UserError(f"{outdir} is in use by another run" + (f" (process {holder})" if holder else "") +
                            "; wait for it to end, stop it, or choose another --outdir.") from None
        if not os.path.exists(path) or not os.path.samefile(path, f.fileno()):
            f.close()  # its holder removed this .lock as it let go: lock the one there now
            continue
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        return f
    raise UserError(f"{outdir} is being taken and given back by other commands right now; try again.")


def check_new_run(outdir, overwrite):
    """A new run may start in outdir: it holds no run, or --overwrite says to delete the old one."""
    if os.path.exists(os.path.join(outdir, "checkpoint.pt")) and not overwrite:
        raise UserError(f"{outdir} already holds a run (checkpoint.pt); continue it with --resume, start over "
                        f"with --overwrite, or choose another --outdir.")


def delete_old_run(outdir):
    """--overwrite: the old run's files, its checkpoints (and their older copy) first, so that nothing
    of it can mix with the new run or be taken for it; files that are not a run's stay."""
    for name in RUN_FILES:
        if os.path.exists(os.path.join(outdir, name)):
            os.remove(os.path.join(outdir, name))
    for name in RUN_FOLDERS:
        shutil.rmtree(os.path.join(outdir, name), ignore_errors=True)


@contextlib.contextmanager
def replaced_folder(path):
    """A new folder to write into, which takes the place of `path` (and of what an earlier
    --generate or --export-real wrote there) once it is complete: an FID tool reading `path` never
    sees two commands' images, nor half of one's. A command that fails leaves the old folder."""
    tmp = f"{path}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
