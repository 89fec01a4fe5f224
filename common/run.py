"""Run: the record of one training run, and the bookkeeping that follows from what the script
tells it. Not a trainer: the loop, the models and every backward() / step() stay in the script.

    run = common.Run("dcgan_celeba", args, losses=[...], scores=[...])   # claims --outdir
    fixed_noise = run.start(netG, netD, optimizerG, optimizerD, fixed_noise, dataloader)
    for epoch in run.epochs(dataloader):
        for i, data in enumerate(dataloader, dataloader.start):
            ...                                     # the tutorial's step
            run.step(i, errD, errG, ...)            # history, NaN stop, checkpoints, Ctrl-C
        run.end_epoch(netG(fixed_noise))            # grid, checkpoint, pictures, the epoch's line
    run.finish()

What lands in --outdir, and when:
  samples/epoch_NNNN.png, checkpoint.pt   after every epoch (checkpoint.pt also every
                                          --checkpoint-every iterations, and on a stop)
  history.csv, losses.png, scores.png,    the derived pictures: after the first epoch, then at
  progress.gif, real_vs_fake.png,         most every DRAW_EVERY seconds (so at most about that
  quality.csv, quality.png                stale), and always when the run ends, stops or diverges
"""
import collections
import gc
import math
import os
import shlex
import signal
import sys
import time

import torch

from . import pictures, quality, sampling
from .checkpoints import check_settings, load_checkpoint, rng_states, set_rng_states, write_checkpoint
from .cli import NOT_MATH
from .device import bare, rank_and_world
from .errors import Diverged, QuitNow, UserError

try:
    import fcntl  # POSIX; on Windows the outdir is not locked
except ImportError:
    fcntl = None

# The derived pictures are redrawn at most this often (seconds of wall time): drawing after every
# epoch would cost a short-epoch run (gan_mnist: 0.4 s per epoch on a CPU) most of its time.
DRAW_EVERY = 30
# The ETA's pace is measured over about this many seconds of the latest wall time: long enough to
# average in several drawings of the pictures, short enough to follow a pace that drifts.
PACE_WINDOW = 120


class Run:
    """One run's folder, settings, history, position, stop flag and timing.

    script: the script's name (recorded in the checkpoint); args: its parsed flags, recorded as
    the run's settings (those that change the math are checked on --resume); losses, scores: the
    names of the numbers run.step() is given, in that order (plotted in losses.png, scores.png);
    nrow: images per row in the sample grids; real_grid: the file name of the real images' grid.
    """

    def __init__(self, script, args, losses, scores=(), nrow=8, real_grid="real_images.png"):
        self.script, self.settings = script, dict(vars(args))
        self.outdir = args.outdir = args.outdir or os.path.join("output", script)
        self.epochs_total, self.checkpoint_every = args.epochs, args.checkpoint_every
        self.names, self.losses, self.scores = list(losses) + list(scores), list(losses), list(scores)
        self.nrow, self.real_grid = nrow, real_grid
        self.rank = rank_and_world()[0]
        self.history = {"epoch": [], "iteration": [], **{name: [] for name in self.names}}
        self.pending = []  # numbers of iterations not yet in history, still on the device
        self.epoch = self.batch = self.iterations = 0
        self.stop_signal, self.lock, self.ckpt, self.bar, self.fake = None, None, None, None, None
        self.finished, self.closed, self.gif_frames = False, False, pictures.GifFrames()
        self.draw_seconds = self.draw_total = 0.0  # the latest drawing of the pictures; all of them
        self.old_handlers = None  # the SIGINT / SIGTERM handlers before start()
        self.eval_every, self.quality_rows, self.reference = getattr(args, "eval_every", None), [], None
        if getattr(args, "interpolate", False) and not args.generate:
            raise UserError("--interpolate walks through the latent space of --generate's images; add "
                            "--generate N, or leave out --interpolate.")
        reuse = args.resume or args.generate or getattr(args, "evaluate", None)
        self.claim_outdir(overwrite=args.overwrite, reuse=reuse or getattr(args, "export_real", None))
        if reuse:
            self.checkpoint()  # before any data is loaded: a missing or foreign checkpoint is said at once

    # -----------------------------------------------------------------------------------------
    # The folder: one run at a time
    # -----------------------------------------------------------------------------------------

    def claim_outdir(self, overwrite, reuse):
        outdir = self.outdir
        if os.path.exists(outdir) and not os.path.isdir(outdir):
            raise UserError(f"--outdir {outdir} is a file; give a folder.")
        try:
            os.makedirs(os.path.join(outdir, "samples"), exist_ok=True)
            probe = os.path.join(outdir, f".write-test{os.getpid()}")
            open(probe, "w").close()
            os.remove(probe)
        except OSError as e:
            raise UserError(f"--outdir {outdir} is not writable ({e.strerror}); choose another folder.") from None
        if self.rank == 0:
            self.lock = lock_folder(outdir)
        if os.path.exists(os.path.join(outdir, "checkpoint.pt")) and not (reuse or overwrite):
            self.release()
            raise UserError(f"{outdir} already holds a run (checkpoint.pt); continue it with --resume, "
                            f"start over with --overwrite, or choose another --outdir.")
        if overwrite and not reuse and self.rank == 0:  # what the new run might not write again
            old = [os.path.join("samples", f) for f in os.listdir(os.path.join(outdir, "samples")) if f.startswith("epoch_")]
            for name in old + ["quality.csv", "quality.png", "quality.json"]:
                if os.path.exists(os.path.join(outdir, name)):
                    os.remove(os.path.join(outdir, name))

    def release(self):
        """Give --outdir back (the lock also dies with the process) and the signals to their owners."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None
        if self.old_handlers:
            signal.signal(signal.SIGINT, self.old_handlers[0])
            signal.signal(signal.SIGTERM, self.old_handlers[1])
            self.old_handlers = None

    def checkpoint(self):
        """The checkpoint in --outdir (read once), refused if another script made it."""
        if self.ckpt is None:
            try:
                self.ckpt = load_checkpoint(self.outdir, self.script)
            except BaseException:
                self.release()
                raise
        return self.ckpt

    def saved_settings(self):
        """The settings the run in --outdir was trained with (to build its networks)."""
        return self.checkpoint()["settings"]

    def generate(self, netG, noise_shape, n, seed, interpolate=False):
        """--generate N: images from the generator in checkpoint.pt (netG: the script's generator,
        built from saved_settings()) into <outdir>/generated/; trains nothing."""
        ckpt = self.checkpoint()
        netG.load_state_dict(ckpt["netG"])
        image_shape = ckpt.get("image_shape")
        if image_shape is None:  # a checkpoint from before image_shape was saved
            with torch.no_grad():
                out = netG(torch.zeros(2, *noise_shape, device=next(netG.parameters()).device))
            side = math.isqrt(out[0].numel())  # gan_mnist's G makes 784-vectors: 28x28 digits
            image_shape = out.shape[1:] if out.dim() == 4 else (1, side, side)
        sampling.generate(netG, noise_shape, tuple(image_shape), n, seed, os.path.join(self.outdir, "generated"),
                          interpolate)
        self.release()

    def evaluate(self, netG, noise_shape, dataloader, n, seed):
        """--evaluate N: FD and digit shares of N samples of the generator in checkpoint.pt against N
        real digits; prints one line starting "FD", writes quality.png and quality.json."""
        ckpt = self.checkpoint()
        netG.load_state_dict(ckpt["netG"])
        self.image_shape = tuple(ckpt.get("image_shape") or (1, 28, 28))
        self.reference = self.reference_for(dataloader, n)
        result = {"epoch": ckpt["epoch"], "iteration": ckpt["iteration"], "seed": seed,
                  **self.measure(netG, noise_shape, seed, n)}
        print(quality.line(result))
        quality.plot_shares(result, os.path.join(self.outdir, "quality.png"), f"{self.script}, epoch {ckpt['epoch']}")
        quality.write_json(result, os.path.join(self.outdir, "quality.json"))
        print(f"Wrote quality.png and quality.json to {self.outdir}/")
        self.release()

    def reference_for(self, dataloader, n=10_000):
        """The reference classifier (trained on first use, cached beside the data) and the feature
        moments of the first n real digits."""
        images, labels = dataloader.uint8_images()
        beside_data = [] if self.settings.get("fake_data") else [os.path.join(self.settings["dataroot"], "MNIST")]
        device = dataloader.device
        net = quality.classifier(images, labels, beside_data + [self.outdir], device)
        return net, quality.real_moments(net, images[:n], device), min(n, len(images))

    def measure(self, netG, noise_shape, seed, n=None):
        net, real_stats, n_real = self.reference
        return quality.measure(netG, noise_shape, self.image_shape, net, real_stats, n or n_real, seed)

    # -----------------------------------------------------------------------------------------
    # Start or resume, and the epochs
    # -----------------------------------------------------------------------------------------

    def start(self, netG, netD, optimizerG, optimizerD, fixed_noise, dataloader):
        """A new run: write the real images and the untrained generator's output (epoch 0). With
        --resume: restore both nets and optimizers, the position, fixed_noise, the history and
        every RNG state, after checking that no setting that changes the math differs. Returns
        fixed_noise (the saved one on --resume). Ctrl-C and SIGTERM are caught from here on."""
        self.nets = (netG, netD, optimizerG, optimizerD)
        self.fixed_noise, device = fixed_noise, fixed_noise.device
        self.batches, self.batch_size, self.n_images = len(dataloader), dataloader.batch_size, dataloader.n
        self.math = {k: v for k, v in sorted(self.settings.items()) if k not in NOT_MATH}
        self.math.update(data=dataloader.id, processes=rank_and_world()[1])  # under DDP each process normalises its share
        self.real = dataloader.first_images(len(fixed_noise))
        self.image_shape = tuple(self.real.shape[1:])
        self.epoch0, self.batch0 = 0, 0
        if self.settings["resume"]:
            ckpt = self.checkpoint()
            try:
                check_settings(ckpt["settings"], self.math)
            except UserError:
                self.release()
                raise
            for net, name in ((netG, "netG"), (netD, "netD")):
                bare(net).load_state_dict(ckpt[name])
            optimizerG.load_state_dict(ckpt["optimizerG"])
            optimizerD.load_state_dict(ckpt["optimizerD"])
            set_rng_states(ckpt["rng"])
            self.epoch0, self.batch0 = ckpt["epoch"], ckpt["iteration"]
            self.fixed_noise = fixed_noise = ckpt["fixed_noise"].to(device)
            self.history = {k: v.tolist() if torch.is_tensor(v) else list(v) for k, v in ckpt["history"].items()}
            self.iterations = len(self.history["epoch"])
            self.quality_rows = list(ckpt.get("quality", []))
            if self.epoch0 >= self.epochs_total:
                print(f"This run has already trained {self.epoch0} epochs (--epochs {self.epochs_total}): nothing "
                      f"to do. Give a larger --epochs to train on.")
                self.finished = True
                return fixed_noise
            print(f"Resuming at epoch {self.epoch0}, iteration {self.batch0}")
        elif self.rank == 0:
            pictures.save_grid(self.real, os.path.join(self.outdir, self.real_grid), self.nrow)
            with torch.no_grad():
                pictures.save_grid(self.as_images(netG(fixed_noise)), self.sample_path(0), self.nrow)
        if self.eval_every:
            self.reference = self.reference_for(dataloader)
        self.old_handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)
        return fixed_noise

    def epochs(self, dataloader):
        """range(first epoch, --epochs), telling the dataloader each epoch (its order) and the batch
        a resumed epoch continues at."""
        if self.finished:
            return
        self.loop_started = self.drawn_at = time.monotonic()
        self.batches_done = 0
        self.pace_marks = collections.deque([(self.loop_started, 0, self.draw_total)])  # (time, batches done, drawing s)
        for epoch in range(self.epoch0, self.epochs_total):
            start = self.batch0 if epoch == self.epoch0 else 0
            dataloader.set_epoch(epoch, start)
            self.epoch, self.batch = epoch, start
            self.bar = progress_bar(len(dataloader), start, f"epoch {epoch + 1}/{self.epochs_total}")
            self.epoch_started = time.monotonic()
            yield epoch

    # -----------------------------------------------------------------------------------------
    # What the script tells the run
    # -----------------------------------------------------------------------------------------

    def step(self, i, *values):
        """Iteration i is done; values: its numbers, in the order of losses + scores (tensors, kept
        on the device). Saves every --checkpoint-every iterations; on Ctrl-C / SIGTERM saves and
        exits with the command that continues. Returns the number of iterations done in all."""
        self.pending.append((self.epoch, i, torch.stack([v.detach().float().reshape(()) for v in values])))
        self.batch, self.iterations, self.batches_done = i + 1, self.iterations + 1, self.batches_done + 1
        self.bar.update(1)
        if self.bar.n % 10 == 0 and not self.bar.disable:
            rate = (self.bar.n - self.bar_start()) / max(time.monotonic() - self.epoch_started, 1e-9)
            self.bar.set_postfix_str(f"{rate * self.batch_size:.0f} img/s, run ETA {clock(self.eta())}", refresh=False)
        stop = self.stop_requested()
        if self.iterations % self.checkpoint_every == 0 or stop:
            self.flush()
            self.save(self.epoch, i + 1)
        if stop:
            self.exit_after_stop(self.epoch, i + 1)
        if time.monotonic() - self.drawn_at >= DRAW_EVERY:
            self.flush()
            self.draw()
        return self.iterations

    def end_epoch(self, fake):
        """The epoch is done; fake: the generator's output on the fixed noise. Saves its grid and
        a checkpoint, redraws the pictures when due, prints the epoch's line."""
        self.flush()
        seconds = time.monotonic() - self.epoch_started
        self.fake = self.as_images(fake).detach().cpu()
        if self.rank == 0:
            pictures.save_grid(self.fake, self.sample_path(self.epoch + 1), self.nrow)
        if self.eval_every and (self.epoch + 1) % self.eval_every == 0:
            row = {"epoch": self.epoch + 1, **self.measure(self.nets[0], self.fixed_noise.shape[1:],
                                                             self.settings["seed"])}
            self.quality_rows.append(row)
            self.log(f"epoch {self.epoch + 1} quality: {quality.line(row)}")
        self.save(self.epoch + 1, 0)
        self.batch = 0
        if time.monotonic() - self.drawn_at >= DRAW_EVERY or self.epoch == self.epoch0:
            self.draw()  # (also after the first epoch: the pictures appear early, and the ETA learns their cost)
        self.bar.close()
        self.pace_marks.append((time.monotonic(), self.batches_done, self.draw_total))
        images = min((self.batches - self.bar_start()) * self.batch_size, self.n_images)
        self.log(f"epoch {self.epoch + 1}/{self.epochs_total} done in {seconds:.2f} s "
                 f"({images / max(seconds, 1e-9):.0f} img/s); run ETA {clock(self.eta(epoch_done=True))}")
        if self.stop_requested():
            self.exit_after_stop(self.epoch + 1, 0)

    def finish(self):
        """The last epoch is done: the pictures drawn whole, a summary line, the folder given back."""
        if not self.finished:
            self.close()
            if self.rank == 0:
                last = ", ".join(f"{n} {self.history[n][-1]:.4f}" for n in self.losses) if self.history["epoch"] \
                    else "no iterations"
                print(f"Done in {clock(time.monotonic() - self.loop_started)}; final {last}. Outputs in "
                      f"{self.outdir}/: samples/, progress.gif, losses.png, history.csv, checkpoint.pt and the figures.")
        self.release()

    def close(self, diverged=False):
        """Bring the pictures up to the last good iteration (also when training diverged)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.flush(finite_only=diverged)
        finally:
            self.draw()
            self.release()

    def log(self, line):
        """print() that keeps the progress bar intact."""
        from tqdm import tqdm
        tqdm.write(line)

    def means(self, names, k):
        """The means of the last k values of each named number (the course's display-step means)."""
        self.flush()
        return [sum(self.history[name][-k:]) / len(self.history[name][-k:]) for name in names]

    # -----------------------------------------------------------------------------------------
    # History, checkpoints, pictures
    # -----------------------------------------------------------------------------------------

    def flush(self, finite_only=False):
        """Move the pending numbers into history (one host sync); stop if any is NaN or infinite."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        values = torch.stack([v for _, _, v in pending]).cpu()
        for (epoch, i, _), row in zip(pending, values.tolist()):
            if not all(math.isfinite(x) for x in row):
                if finite_only:
                    return
                self.close(diverged=True)
                raise Diverged(f"training diverged: a loss became NaN or infinite at epoch {epoch}, "
                               f"iteration {i}; the last checkpoint was left as it was. Try a lower --lr.")
            self.history["epoch"].append(epoch)
            self.history["iteration"].append(i)
            for name, x in zip(self.names, row):
                self.history[name].append(x)

    def save(self, epoch, iteration):
        """Everything needed to continue exactly from here: both nets and optimizers, the position
        (epoch, and iterations done in it), the fixed noise, the history and every RNG state."""
        netG, netD, optimizerG, optimizerD = self.nets
        state = {
            "netG": bare(netG).state_dict(), "netD": bare(netD).state_dict(),
            "optimizerG": optimizerG.state_dict(), "optimizerD": optimizerD.state_dict(),
            "epoch": epoch, "iteration": iteration, "fixed_noise": self.fixed_noise.cpu(),
            "history": {k: torch.tensor(v, dtype=torch.int64 if k in ("epoch", "iteration") else torch.float32)
                        for k, v in self.history.items()},
            "rng": rng_states(), "settings": self.math, "script": self.script, "image_shape": list(self.image_shape),
            "quality": self.quality_rows}
        try:
            write_checkpoint(state, self.outdir)
        except (UserError, Diverged):
            self.close(diverged=True)
            raise

    def draw(self):
        """Rewrite the derived pictures and history.csv from the history so far (rank 0)."""
        self.drawn_at = time.monotonic()
        if self.rank != 0 or not self.history["epoch"] and self.fake is None:
            return
        out = self.outdir
        pictures.write_csv(self.history, os.path.join(out, "history.csv"))
        pictures.plot_curves(self.history, self.losses, os.path.join(out, "losses.png"),
                             "Generator and Discriminator Loss During Training", "loss")
        if self.scores:
            pictures.plot_curves(self.history, self.scores, os.path.join(out, "scores.png"),
                                 "Discriminator outputs: D(x) on real, D(G(z)) on fake", "mean D output")
        pngs = sorted(f for f in os.listdir(os.path.join(out, "samples")) if f.startswith("epoch_"))
        if pngs:
            pictures.write_gif([os.path.join(out, "samples", f) for f in pngs], os.path.join(out, "progress.gif"),
                               [f"epoch {int(f[6:10])}" for f in pngs], cache=self.gif_frames)
        if self.fake is not None:
            pictures.real_vs_fake(self.real, self.fake, os.path.join(out, "real_vs_fake.png"), self.nrow)
        if self.quality_rows:
            pictures.write_csv({k: [r[k] for r in self.quality_rows] for k in ("epoch", "FD", "smallest_share",
                                                                               "rarest_digit")},
                               os.path.join(out, "quality.csv"))
            quality.plot_over_epochs(self.quality_rows, os.path.join(out, "quality.png"))
        self.draw_seconds = time.monotonic() - self.drawn_at
        self.draw_total += self.draw_seconds
        self.drawn_at = time.monotonic()

    def sample_path(self, epoch):
        return os.path.join(self.outdir, "samples", f"epoch_{epoch:04d}.png")

    def as_images(self, output):
        """The generator's output in the shape of the training images (gan_mnist's G makes vectors)."""
        return output.reshape(-1, *self.image_shape)

    # -----------------------------------------------------------------------------------------
    # Time left
    # -----------------------------------------------------------------------------------------

    def bar_start(self):
        return self.batch0 if self.epoch == self.epoch0 else 0

    def eta(self, epoch_done=False):
        """Seconds the run still needs: the batches left at the pace of the last PACE_WINDOW seconds
        (training and the work after each epoch), plus the drawings of the pictures still to come:
        one every DRAW_EVERY seconds and a last one, each as long as the latest was."""
        now = time.monotonic()
        while len(self.pace_marks) > 1 and now - self.pace_marks[1][0] >= PACE_WINDOW:
            self.pace_marks.popleft()
        since, batches, drawn = self.pace_marks[0]
        pace = (now - since - (self.draw_total - drawn)) / max(self.batches_done - batches, 1)
        left = (self.epochs_total - self.epoch - 1) * self.batches + (0 if epoch_done else self.batches - self.batch)
        drawing = min(self.draw_seconds / DRAW_EVERY, 0.5)  # the share of the time that goes to drawing
        return left * pace / (1 - drawing) + self.draw_seconds

    # -----------------------------------------------------------------------------------------
    # Ctrl-C and SIGTERM: finish the iteration, save, and say how to continue
    # -----------------------------------------------------------------------------------------

    def on_signal(self, signum, frame):
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise QuitNow  # a second Ctrl-C: quit now (the last checkpoint stays whole)
        if self.stop_signal is None:
            print(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving ... "
                  f"(Ctrl-C again quits without saving)", file=sys.stderr, flush=True)
        self.stop_signal = signum

    def stop_requested(self):
        """Has Ctrl-C or SIGTERM arrived? Under DDP the processes agree (any one stopping stops all),
        so that all of them save at the same iteration."""
        if rank_and_world()[1] > 1:
            import torch.distributed as dist
            flag = torch.tensor([self.stop_signal or 0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and self.stop_signal is None:
                self.stop_signal = int(flag.item())
        return self.stop_signal is not None

    def exit_after_stop(self, epoch, i):
        if self.bar is not None:
            self.bar.close()
        self.close()
        argv = [a for a in sys.argv if a != "--overwrite"] + ([] if "--resume" in sys.argv else ["--resume"])
        world = rank_and_world()[1]
        command = shlex.join((["torchrun", f"--nproc_per_node={world}"] if world > 1 else ["python"]) + argv)
        if self.rank == 0:
            print(f"Stopped at epoch {epoch}, iteration {i}; saved {os.path.join(self.outdir, 'checkpoint.pt')}. "
                  f"Continue with: {command}", file=sys.stderr, flush=True)
        sys.exit(128 + self.stop_signal)


def lock_folder(outdir):
    """Hold an OS lock on <outdir>/.lock while this process uses the folder; it dies with the process
    (also on kill -9 or a power cut), so a folder is never left locked. Another run is refused."""
    if fcntl is None:
        return None
    path = os.path.join(outdir, ".lock")
    for attempt in range(2):
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
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        return f


def progress_bar(total, initial, desc):
    """A tqdm bar for one epoch, only on a terminal: in a log file the per-epoch lines are the progress."""
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=not sys.stderr.isatty())


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
