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
import os
import re
import shutil

from .errors import UserError, cannot_write
from .signals import signals_held

try:
    import fcntl  # POSIX; on Windows the outdir is not locked
except ImportError:
    fcntl = None

# Everything the commands write into --outdir, declared once, with what it is (<n> stands for a
# number, <key> for a cache's key). --overwrite deletes these of an old run, and nothing else (a
# file of the user's own, in samples/ say, stays); claim() removes what a command killed mid-write
# left of them; output() refuses a name missing here; README's table lists them (a test checks).
OUTPUTS = {
    "checkpoint.pt": "everything needed to continue exactly: after every epoch, every --checkpoint-every "
                     "iterations and on a stop",
    "checkpoint.prev.pt": "the checkpoint before that one",
    "checkpoint.pt.corrupt": "an unreadable checkpoint.pt, moved aside when --resume went on from the older copy",
    "best.pt": "--eval-every: the generator measured best so far (its weights, epoch and measure)",
    "samples/epoch_<n>.png": "the generator's output on the fixed noise: before training, then after every epoch",
    "frames/iteration_<n>.png": "dcgan_celeba: G's output on the fixed noise every 500 iterations and at the last "
                                "(the tutorial's img_list)",
    "real_images.png": "a batch of the training images, as the run starts (MNIST scripts)",
    "training_images.png": "a batch of the training images, as the run starts (dcgan_celeba)",
    "history.csv": "one row per iteration: epoch, iteration and the numbers the script records",
    "losses.png": "the losses over the iterations, raw and smoothed, epochs marked",
    "scores.png": "D(x) and D(G(z)) over the iterations (dcgan_celeba, gan_mnist)",
    "progress.gif": "the frames in order, each labelled (MNIST scripts: the sample grids; dcgan_celeba: frames/)",
    "real_vs_fake.png": "real images beside the latest samples, as the run ends",
    "quality.csv": "sample quality at every --eval-every measurement, the best marked",
    "quality.png": "FD (digits) or FID (faces) over the epochs, the best starred; digits: the smallest share too",
    "evaluation.json": "one measurement of sample quality: --evaluate",
    "evaluation.png": "--evaluate of digits: their shares as bars, FD in the title",
    "generated/images/<n>.png": "--generate N: the N samples alone, for an FID tool",
    "generated/grid.png": "--generate: the first 256 samples at most, as one grid",
    "generated/interpolation.png": "--interpolate: a walk through the latent space, as a grid",
    "generated/interpolation.gif": "--interpolate: the same walk, animated",
    "real/<n>.png": "dcgan_celeba --export-real N: N training images as the training sees them"}
# Kept by --overwrite: caches that hold no run, written here only where the dataset's folder cannot be
CACHES = {
    "image_cache_<key>.pt": "the decoded image folder (dcgan_celeba), valid for exactly its files",
    "digit_classifier_<key>.pt": "the reference digit classifier (MNIST scripts), for exactly its digits",
    "fid_stats_<key>.pt": "the real faces' Inception statistics for FID (dcgan_celeba), for exactly its images",
}
LOCK = ".lock"  # while a command holds the folder: its process id
# A file or folder being written is first named <name>.tmp<process id>[.ext] (see replaced_file)
TEMPORARY = re.compile(r"(?P<name>.+)\.tmp(?P<pid>\d+)(\.\w+)?")


def output(outdir, name):
    """The path of the declared output `name` (see OUTPUTS) in outdir."""
    if not any(matches(declared, name) for declared in {**OUTPUTS, **CACHES}):
        raise ValueError(f"{name} is written into --outdir but not declared in common/outdir.py OUTPUTS")
    return os.path.join(outdir, name)


def matches(declared, name):
    """Whether `name` is one of the names a declared name stands for ("samples/epoch_0003.png" is
    one of "samples/epoch_<n>.png")."""
    pattern = re.escape(declared).replace(re.escape("<n>"), r"\d+").replace(re.escape("<key>"), r"\w+")
    return re.fullmatch(pattern, name) is not None


def declared_in(names):
    """{folder ("" for --outdir itself): the declared names in it} for these declared names (a
    folder is a name in its parent: it is written whole too)."""
    folders = {}
    for declared in names:
        parts = declared.split("/")
        for depth in range(len(parts)):
            folders.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    return folders


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
        # What a command stopped mid-write left here (no other command writes here while we hold it;
        # a cache's temporaries may be another command's, decoding before it claims the folder)
        for folder, names in declared_in(OUTPUTS).items():
            remove_temporaries(os.path.join(outdir, folder), names, every=True)

    def release(self):
        """Give the folder back: unlock, remove .lock, and the folder if this command made it empty."""
        if self.lock is not None:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self.outdir, LOCK))  # before unlocking: see lock_folder
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
    path = os.path.join(outdir, LOCK)
    for attempt in range(3):
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
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
    """--overwrite: the old run's OUTPUTS, its checkpoints (and their older copy) first, so that
    nothing of it can mix with the new run or be taken for it. Other files stay, and so does a
    folder that still holds some."""
    folders = declared_in(OUTPUTS)
    for folder in sorted(folders, key=lambda f: (f != "", f.count("/"))):  # (the top first: the checkpoints)
        path = os.path.join(outdir, folder)
        for entry in sorted(os.listdir(path), key=lambda e: not e.startswith("checkpoint")) \
                if os.path.isdir(path) else []:
            if os.path.isfile(os.path.join(path, entry)) and any(matches(n, entry) for n in folders[folder]):
                os.remove(os.path.join(path, entry))
    for folder in sorted(folders, key=lambda f: -f.count("/")):  # (generated/images before generated)
        if folder:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(outdir, folder))  # only if empty


def temporary_name(path, ext=""):
    """Where `path` is written before it takes its place: <path>.tmp<this process>[ext]."""
    return f"{path}.tmp{os.getpid()}{ext}"


def remove_temporaries(folder, names, every=False):
    """Remove what a command stopped mid-write left in folder (kill -9 or a power cut: no cleanup
    ran): the temporary files and folders (see temporary_name) of the names that match one of the
    patterns `names`, and nothing else. every: all of them (the folder is ours alone); else only
    those of processes that are gone."""
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        match = TEMPORARY.fullmatch(entry)
        if not match or not any(matches(n, match["name"]) for n in names) or \
                int(match["pid"]) == os.getpid():
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

