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
import re
import shutil

from .errors import UserError, cannot_write
from .signals import signals_held

try:
    import fcntl  # POSIX; on Windows the outdir is not locked
except ImportError:
    fcntl = None

# What a run writes into --outdir, by name; --overwrite deletes these of the old run and nothing
# else (a file of the user's own, in samples/ say, stays).
RUN_FILES = ["checkpoint.pt", "checkpoint.prev.pt", "checkpoint.pt.corrupt", "history.csv", "losses.png",
             "scores.png", "progress.gif", "real_vs_fake.png", "training_images.png", "real_images.png",
             "quality.csv", "quality.png", "evaluation.png", "evaluation.json"]
RUN_FOLDERS = {"samples": r"epoch_\d+\.png",  # folder: the names of what the commands write into it
               "generated/images": r"\d+\.png", "generated": r"grid\.png|interpolation\.(png|gif)",
               "real": r"\d+\.png"}
# A file or folder being written is first named <name>.tmp<process id>[.ext] (see replaced_file)
TEMPORARY = re.compile(r"(?P<name>.+)\.tmp(?P<pid>\d+)(\.\w+)?")


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
        # What a command stopped mid-write left here (no other command writes here while we hold it)
        top = RUN_FILES + [folder for folder in RUN_FOLDERS if "/" not in folder]  # (a folder is written whole too)
        remove_temporaries(outdir, "|".join(map(re.escape, top)), every=True)
        for folder, names in RUN_FOLDERS.items():
            remove_temporaries(os.path.join(outdir, folder), names, every=True)

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
    of it can mix with the new run or be taken for it. Only what the commands write, by name: other
    files stay, and so does a folder that still holds some."""
    for name in RUN_FILES:
        if os.path.exists(os.path.join(outdir, name)):
            os.remove(os.path.join(outdir, name))
    for folder, names in RUN_FOLDERS.items():
        path = os.path.join(outdir, folder)
        for entry in os.listdir(path) if os.path.isdir(path) else []:
            if re.fullmatch(names, entry):
                os.remove(os.path.join(path, entry))
    for folder in sorted(RUN_FOLDERS, reverse=True):  # (generated/images before generated)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(outdir, folder))  # only if empty


def temporary_name(path, ext=""):
    """Where `path` is written before it takes its place: <path>.tmp<this process>[ext]."""
    return f"{path}.tmp{os.getpid()}{ext}"


def remove_temporaries(folder, names, every=False):
    """Remove what a command stopped mid-write left in folder (kill -9 or a power cut: no cleanup
    ran): the temporary files and folders (see temporary_name) of the names that the regular
    expression `names` matches, and nothing else. every: all of them (the folder is ours alone);
    else only those of processes that are gone."""
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        match = TEMPORARY.fullmatch(entry)
        if not match or not re.fullmatch(names, match["name"]) or int(match["pid"]) == os.getpid():
            continue
        if not every and process_exists(int(match["pid"])):
            continue
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def process_exists(pid):
    try:
        os.kill(pid, 0)  # (signal 0: only asks whether it could be sent)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but is another user's
        pass
    return True


@contextlib.contextmanager
def replaced_file(path, ext=""):
    """A temporary file to write (ext: its extension, for writers that go by it), which takes the
    place of `path` once written whole: a crash, a full disk or a stop at any instant leaves the old
    file or the new one, never part of one, and no temporary file once the process has ended."""
    tmp = temporary_name(path, ext)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def replaced_folder(path):
    """A new folder to write into, which takes the place of `path` (and of what an earlier
    --generate or --export-real wrote there) once it is complete: an FID tool reading `path` never
    sees two commands' images, nor half of one's. A command that fails or is stopped (Ctrl-C,
    SIGTERM) leaves the old folder, and no temporary one."""
    tmp = temporary_name(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        yield tmp
    except OSError as e:  # (a full disk, say)
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write {path}/ {cannot_write(e)}; what was there before is left as it "
                        f"was.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = temporary_name(path, ".old")  # (a temporary's name too: a claim removes what a kill left)
    try:
        with signals_held():  # (the two renames: never the old folder gone and the new one not yet there)
            if os.path.exists(path):
                os.replace(path, old)
            os.replace(tmp, path)
    finally:  # (also when a signal held during the renames acts at their end)
        shutil.rmtree(old, ignore_errors=True)

