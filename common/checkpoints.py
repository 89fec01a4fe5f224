"""Checkpoints: written so that a crash at any instant leaves a whole one, holding CPU tensors and
plain data only (so torch.load(path, weights_only=True) reads them on any machine), and refused
when a resume would change the math."""
import os
import random
import shutil

import numpy as np
import torch

from .device import rank_and_world
from .errors import Diverged, UserError, cannot_write, first_line
from .outdir import replaced_file, temporary_name


def atomic_save(obj, path):
    """Write obj so that a crash at any instant leaves either the old file or the new one whole. A
    failed write (a full disk) raises OSError, whose strerror says why."""
    with replaced_file(path) as tmp, open(tmp, "wb") as f:
        torch_save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    try:  # make the rename itself durable
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def torch_save(obj, f):
    """torch.save(obj, f), but a write that fails raises its OSError: torch.save itself turns it into
    a RuntimeError ("unexpected pos ...") that does not say the disk is full. (Its zip writer calls
    write() and flush() of the file object it is given: this one keeps the first OSError they
    raise, to raise it again in place of torch's RuntimeError.)"""
    class Writes:  # f, keeping the first error of its writes
        error = None

        def keep(self, method, *data):
            try:
                return method(*data)
            except OSError as e:
                self.error = self.error or e
                raise

        def write(self, data):
            return self.keep(f.write, data)

        def flush(self):
            return self.keep(f.flush)
    writes = Writes()
    try:
        torch.save(obj, writes)
    except RuntimeError:
        if writes.error is not None:
            raise writes.error from None
        raise


def to_cpu(obj):
    """obj with every tensor in it copied to the CPU (a GPU's state dicts hold GPU tensors)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def write_checkpoint(state, outdir, where):
    """Save checkpoint.pt (rank 0 only); the one it replaces stays as checkpoint.prev.pt. where:
    the place in the run, in words, for the sentence when the weights are no longer finite."""
    state = to_cpu(state)  # one copy from the device, then checked and written from the host
    for name in ("netG", "netD"):
        if not all(torch.isfinite(t).all() for t in state[name].values() if t.is_floating_point()):
            raise Diverged(f"training diverged: the weights of {name} became NaN or infinite {where}; the last "
                           f"checkpoint was left as it was. Try a lower --lr.")
    if rank_and_world()[0] != 0:
        return  # under DDP only rank 0 writes (the RNG states of every rank are in `state`)
    path, prev = os.path.join(outdir, "checkpoint.pt"), os.path.join(outdir, "checkpoint.prev.pt")
    had_one = os.path.exists(path)
    if had_one:
        link = temporary_name(prev)
        try:  # a hard link: checkpoint.pt itself is never missing, not even for an instant
            if os.path.lexists(link):  # (left by a save of this process that failed at this point)
                os.remove(link)
            os.link(path, link)
            os.replace(link, prev)
        except OSError:
            pass
    try:
        atomic_save(state, path)
    except OSError as e:
        raise UserError(f"could not write {path} {cannot_write(e)}; " + (
            "the previous checkpoint is intact, and --resume continues from it." if had_one else
            "it is the run's first, so there is nothing to resume: rerun the command.")) from None


def load_checkpoint(outdir, script):
    """checkpoint.pt of the run in outdir, made by `script` (one written by another of the scripts,
    or by a version before checkpoints said which script wrote them, is refused, naming what to
    do); under DDP rank 0 reads it and sends it to the other processes."""
    rank, world = rank_and_world()
    box = [read_checkpoint(outdir) if rank == 0 else None]
    if world > 1:
        import torch.distributed as dist
        dist.broadcast_object_list(box, src=0)
    made_by = box[0].get("script")
    if made_by is None:
        raise UserError(f"{outdir}/checkpoint.pt was written by an earlier version of these scripts (one that did "
                        f"not record its script, before 2026-11), which this version does not read; continue "
                        f"it with that version, or start a new run with --overwrite.")
    if made_by != script:
        raise UserError(f"this run was made by {made_by}.py; continue or sample it with {made_by}.py "
                        f"--outdir {outdir}, or give {script}.py another --outdir.")
    return box[0]


def load_generator(outdir, script, build_generator, device, defaults, which=None):
    """(a trained generator of the run in outdir, its checkpoint, which one it is in words), for
    --generate and --evaluate. build_generator(settings) is the script's generator for the run's
    saved settings; defaults (args.math_defaults) stand in for the settings of flags added since
    the run was saved. which (--generator): "last" (checkpoint.pt), "best" (best.pt) or "average"
    (--ema's, in checkpoint.pt); None: the best where the run kept one, else the last."""
    ckpt = load_checkpoint(outdir, script)
    best = os.path.join(outdir, "best.pt")
    which = which or ("best" if os.path.exists(best) else "last")
    where = f"epoch {ckpt['epoch']}" + (f", iteration {ckpt['iteration']}" if ckpt["iteration"] else "")
    if which == "best":
        if not os.path.exists(best):
            raise UserError(f"--generator best: the run in {outdir} kept no best generator (best.pt, which "
                            f"--eval-every K keeps); sample --generator last, or train on with --eval-every.")
        kept = read_file(best)
        weights, words = kept["netG"], (f"the best generator kept (best.pt: the {kept['generator']} generator of "
                                        f"epoch {kept['epoch']}, {kept['score']} {kept['value']:.3f})")
    elif which == "average":
        if not ckpt.get("average"):
            raise UserError(f"--generator average: the run in {outdir} kept no averaged generator (--ema); sample "
                            f"--generator last or best.")
        weights, words = ckpt["average"]["weights"], f"the averaged generator (--ema) of checkpoint.pt ({where})"
    else:
        weights, words = ckpt["netG"], f"the last generator (checkpoint.pt: {where})"
    netG = build_generator({**defaults, **ckpt["settings"]}).to(device)
    netG.load_state_dict(weights)
    return netG, ckpt, words


def write_best(netG, outdir, epoch, generator, score, value):
    """best.pt: the generator that measured best so far, written whole (rank 0 only); not needed to
    resume (the checkpoint's quality rows say which was best). A write that fails stops the run as
    a checkpoint's does (it is written just before the epoch's checkpoint)."""
    if rank_and_world()[0] != 0:
        return
    path = os.path.join(outdir, "best.pt")
    try:
        atomic_save({"netG": to_cpu(netG.state_dict()), "epoch": epoch, "generator": generator, "score": score,
                     "value": value}, path)
    except OSError as e:
        raise UserError(f"could not write {path} {cannot_write(e)}; " + (
            "the last checkpoint is intact, and --resume continues from it." if
            os.path.exists(os.path.join(outdir, "checkpoint.pt")) else
            "the run has no checkpoint yet, so there is nothing to resume: rerun the command.")) from None


def read_file(path):
    """A file of this project's (tensors and plain data only), or one sentence saying what is wrong."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} {what_is_wrong(path, e)}.") from None


def read_checkpoint(outdir):
    """Load checkpoint.pt safely (tensors and plain data only); fall back to the previous copy."""
    path, prev = os.path.join(outdir, "checkpoint.pt"), os.path.join(outdir, "checkpoint.prev.pt")
    if not os.path.exists(path):
        raise UserError(f"there is no checkpoint.pt in {outdir}: train first (without --resume, --generate or "
                        f"--evaluate), or point --outdir at a run's folder.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        problem = f"{path} {what_is_wrong(path, e)}"
    try:
        state = torch.load(prev, map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"{problem}, and there is no good older copy; start a new run with "
                        f"--overwrite.") from None
    os.replace(path, path + ".corrupt")  # kept for inspection, out of the way
    shutil.copy2(prev, path)
    print(f"warning: {problem}; continuing from the older good copy checkpoint.prev.pt "
          f"(epoch {state['epoch']}, iteration {state['iteration']}).")
    return state


def what_is_wrong(path, error):
    """Why torch.load refused a file, in words."""
    size = os.path.getsize(path)
    if size == 0:
        return "is empty (0 bytes: the write that made it never finished)"
    if "central directory" in str(error) or "zip archive" in str(error) or isinstance(error, EOFError):
        return f"is truncated or not a checkpoint ({size} bytes, not a whole file written by torch.save)"
    if "weights_only" in str(error) or "Unsupported global" in str(error):
        return ("holds Python objects other than tensors and plain data, so it is not loaded (it is not one of "
                "this project's checkpoints)")
    return f"is unreadable, truncated or not a checkpoint ({first_line(error)[:120] or type(error).__name__})"


def check_settings(old, new, defaults, explain=None):
    """Refuse to resume under settings that change what is computed. A setting the checkpoint does
    not hold (a flag added since it was written) counts at its default. explain: setting -> a
    function that says in words how it changed (else the two values are shown)."""
    missing = object()
    changed = []
    for key, value in sorted(new.items()):
        before = old.get(key, defaults.get(key, missing))
        if before is missing:
            changed.append(f"{key}: not recorded by this run (older than the setting) -> {value!r}")
        elif before != value and key in (explain or {}):
            changed.append(f"{key}: {explain[key]()}")
        elif before != value:
            changed.append(f"{key}: {before!r} -> {value!r}" + ("" if key in old else " (the run is older than "
                                                                  "this setting: it ran at its default)"))
    if changed:
        raise UserError("--resume refused: these settings differ from the checkpoint's and would change "
                        "the training (" + "; ".join(changed) + "); rerun with the old values, or start "
                        "a new run in another --outdir.")


# ---------------------------------------------------------------------------------------------
# Every RNG the training draws from
# ---------------------------------------------------------------------------------------------

def rng_states():
    """Every RNG state, as tensors and plain lists (safe to load): a list with one entry per
    process (one entry without torchrun)."""
    state = rng_state()
    world = rank_and_world()[1]
    if world == 1:
        return [state]
    import torch.distributed as dist
    states = [None] * world
    dist.all_gather_object(states, state)
    return states


def rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": None, "python": None,
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    version, internal, gauss_next = random.getstate()
    state["python"] = [version, list(internal), gauss_next]
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_states(states):
    state = states[rank_and_world()[0]]
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
