"""Run: the record of one training run, and the bookkeeping that follows from what the script
tells it. Not a trainer: the loop, the models and every backward() / step() stay in the script.

    run = common.Run("dcgan_celeba", args, netG, netD, optimizerG, optimizerD, fixed_noise,
                     dataloader, losses=[...], scores=[...])  # --outdir claimed; --resume restores all
    fixed_noise = run.fixed_noise                              # (the saved one on --resume)
    for epoch in run.epochs():
        for i, data in enumerate(dataloader, dataloader.start):
            ...                                     # the tutorial's step
            run.step(i, errD, errG, ...)            # history, NaN stop, checkpoints, Ctrl-C
        run.end_epoch(netG(fixed_noise))            # grid, checkpoint, pictures, the epoch's line
    run.finish()

What lands in --outdir, and when:
  samples/epoch_NNNN.png, checkpoint.pt   after every epoch (checkpoint.pt also every
                                          --checkpoint-every iterations, and on a stop)
  history.csv, losses.png, scores.png,    the derived pictures: after the first iteration that
  progress.gif, quality.csv, quality.png  ends DRAW_EVERY seconds after the last drawing (inside
                                          an epoch too), after the first epoch, and always when
                                          the run ends, stops or diverges (progress.gif only when
                                          a new epoch's samples are there)
  real_vs_fake.png                        when the run ends, stops or diverges (its last samples)

Each piece it uses reads alone: outdir (the folder's lock), history (the numbers, kept on the
device), signals (Ctrl-C and SIGTERM), progress (the bar and the ETA), checkpoints, pictures.
"""
import contextlib
import functools
import os
import re
import sys
import time

import torch

from . import pictures, quality
from .checkpoints import check_settings, load_checkpoint, rng_states, set_rng_states, write_checkpoint
from .data import what_changed
from .device import bare, data_parallel_gpus, peak_gpu_memory, rank_and_world, what_the_bits_depend_on
from .errors import Diverged, UserError, cannot_write, first_line
from .history import History, watch_for_nan
from .outdir import RUN_FOLDERS, check_new_run, claim, delete_old_run
from .pictures import plural
from .progress import Progress, clock
from .signals import StopSignals, agree, continue_command

# The derived pictures are redrawn at most this often (seconds of wall time): drawing after every
# epoch would cost a short-epoch run (gan_mnist: 0.4 s per epoch on a CPU) most of its time.
DRAW_EVERY = 30
# Under torchrun the processes agree on a stop (and on a divergence) every this many iterations,
# and at every save: one small collective and a host sync each time.
AGREE_EVERY = 10


def closes_on_error(method):
    """An unexpected error inside the run's bookkeeping still closes the run (the pictures brought
    up to date, the folder and the Ctrl-C / SIGTERM handlers given back) before it travels on."""
    @functools.wraps(method)
    def closing(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.close()
            raise
    return closing


class Run:
    """One run's folder, settings, history, position and pictures.

    script: the script's name (recorded in the checkpoint); args: its parsed flags; the two nets,
    their optimizers, the fixed noise and the dataloader, as the script made them; losses,
    scores: the names of the numbers run.step() is given, in that order (plotted in losses.png,
    scores.png); nrow: images per row in the sample grids; real_grid: the real images' grid file.
    """

    def __init__(self, script, args, netG, netD, optimizerG, optimizerD, fixed_noise, dataloader, *,
                 losses, scores=(), nrow=8, real_grid="real_images.png"):
        self.script, self.args, self.outdir = script, args, args.outdir
        self.nets, self.dataloader = (netG, netD, optimizerG, optimizerD), dataloader
        self.losses, self.scores, self.nrow, self.real_grid = list(losses), list(scores), nrow, real_grid
        self.device, self.batches = fixed_noise.device, len(dataloader)
        self.rank, self.world = rank_and_world()
        # What is computed: the flags that change the math, and what the script made of them (the
        # data, and over how many parts of each batch BatchNorm computes its statistics)
        self.settings = {k: getattr(args, k) for k in sorted(args.math_defaults)}
        self.settings.update(data=dataloader.id, processes=self.world, data_parallel_gpus=data_parallel_gpus(netD))
        self.defaults = {**args.math_defaults, "processes": 1, "data_parallel_gpus": 1}
        self.machine = what_the_bits_depend_on(self.device, deterministic=not args.cudnn_benchmark)
        self.real = dataloader.first_images(len(fixed_noise))
        self.image_shape = tuple(self.real.shape[1:])
        # Where the run is, and what it has recorded (restore() sets these on --resume)
        self.first_epoch = self.first_batch = self.epoch = self.batch = self.iterations = 0
        self.history, self.quality_rows, self.fake = History(self.losses + self.scores), [], None
        self.stopping, self.closed, self.signals, self.progress = None, False, None, None
        self.not_drawn = set()  # the pictures that could not be written (each said once)
        self.drawn = {}  # what the pictures that change less often than the history show now
        self.folder = claim(self.outdir) if self.rank == 0 else None  # one command at a time in --outdir
        try:
            if args.resume:
                fixed_noise = self.restore()  # the saved one
            elif self.rank == 0:
                check_new_run(self.outdir, args.overwrite)
            self.fixed_noise = fixed_noise
            self.reference = self.quality_reference() if getattr(args, "eval_every", None) else None
            if not args.resume:
                self.begin()
            self.nan_seen = watch_for_nan(netD, self.device)
            self.gif = pictures.GifFrames(pictures.palette_of(self.real, nrow))
            self.signals = StopSignals()  # from here, Ctrl-C and SIGTERM save and stop
        except BaseException:
            self.release()
            raise
        self.progress = Progress(args.epochs, self.batches, dataloader.batch_size, dataloader.n, DRAW_EVERY)
        self.drawn_at = time.monotonic()

    def begin(self):
        """A new run: the old one deleted with --overwrite; the real images and epoch 0 written."""
        if self.rank == 0:
            if self.args.overwrite:
                delete_old_run(self.outdir)
            os.makedirs(os.path.join(self.outdir, "samples"), exist_ok=True)
            with self.picture(self.real_grid, redrawn=False) as path:
                pictures.save_grid(self.real, path, self.nrow)
            with torch.no_grad():  # (the bare G: DDP's wrapper is for all processes at once)
                fake = self.as_images(bare(self.nets[0])(self.fixed_noise))
            with self.picture(sample_name(0), redrawn=False) as path:
                pictures.save_grid(fake, path, self.nrow)

    def restore(self):
        """--resume: both nets and optimizers, the position, the fixed noise, the history and every
        RNG state, after checking that no setting that changes the math differs."""
        ckpt = load_checkpoint(self.outdir, self.script)
        check_settings(ckpt["settings"], self.settings, self.defaults,
                       explain={"data": lambda: what_changed(ckpt.get("data_files"), self.dataloader.files)})
        netG, netD, optimizerG, optimizerD = self.nets
        bare(netG).load_state_dict(ckpt["netG"])
        bare(netD).load_state_dict(ckpt["netD"])
        optimizerG.load_state_dict(ckpt["optimizerG"])
        optimizerD.load_state_dict(ckpt["optimizerD"])
        set_rng_states(ckpt["rng"])
        self.epoch = self.first_epoch = ckpt["epoch"]
        self.batch = self.first_batch = ckpt["iteration"]
        self.history = History(self.losses + self.scores, saved=ckpt["history"])
        self.iterations = len(self.history)
        self.quality_rows = list(ckpt["quality"])
        before, now = ckpt.get("machine", self.machine), self.machine
        if before != now:
            changes = ", ".join(f"{k} {before.get(k)} -> {now.get(k)}" for k in sorted(set(before) | set(now))
                                if before.get(k) != now.get(k))
            print(f"notice: the bits depend on these, which differ from the run's so far ({changes}): it goes on "
                  f"as before, but will not end bit for bit where a run that never stopped would have.")
        if self.first_epoch >= self.args.epochs:
            print(f"This run has already trained {plural(self.first_epoch, 'epoch')} (--epochs {self.args.epochs}): "
                  f"nothing to do. Give a larger --epochs to train on.")
        else:
            print(f"Resuming {self.position(self.first_epoch, self.first_batch)}")
        return ckpt["fixed_noise"].to(self.device)

    def quality_reference(self):
        """--eval-every: the reference classifier and the real digits' features (common/quality.py)."""
        if self.args.fake_data:
            print("notice: --eval-every measures samples against real digits, and --fake-data has none: not measured.")
            return None
        beside_data = os.path.join(self.args.dataroot, "MNIST")
        return quality.reference(self.dataloader, [beside_data, self.outdir])

    def epochs(self):
        """range(first epoch, --epochs), telling the dataloader each epoch (its order) and the batch
        a resumed epoch continues at."""
        for epoch in range(self.first_epoch, self.args.epochs):
            start = self.first_batch if epoch == self.first_epoch else 0
            self.dataloader.set_epoch(epoch, start)
            self.epoch, self.batch = epoch, start
            self.progress.start_epoch(epoch, start)
            yield epoch

    # -----------------------------------------------------------------------------------------
    # What the script tells the run
    # -----------------------------------------------------------------------------------------

    @closes_on_error
    def step(self, i, *values):
        """Iteration i is done; values: its numbers, in the order of losses + scores (tensors, kept
        on the device). Saves every --checkpoint-every iterations; on Ctrl-C / SIGTERM saves and
        exits with the command that continues. Returns the number of iterations done in all."""
        self.history.add(self.epoch, i, values, also_bad=self.nan_seen)
        self.batch, self.iterations = i + 1, self.iterations + 1
        self.progress.batch_done(i)
        # (after the epoch's last batch end_epoch() saves at once: no save of its own there)
        save_due = self.iterations % self.args.checkpoint_every == 0 and self.batch < self.batches
        if self.world == 1:
            self.stopping = self.signals.signum
        elif self.iterations % AGREE_EVERY == 0 or save_due:
            self.agree()
        stop_now = self.stopping is not None and self.batch < self.batches  # (at the last batch: end_epoch)
        if save_due or stop_now:
            self.save(self.epoch, self.batch)
        if save_due and not stop_now and not self.progress.on_terminal() and self.rank == 0:  # (a log has no bar)
            self.log(f"checkpoint.pt saved {self.position(self.epoch, self.batch)}; "
                     f"run ETA {clock(self.progress.eta(self.batch))}")
        if stop_now:
            self.exit_after_stop(self.epoch, self.batch)
        if time.monotonic() - self.drawn_at >= DRAW_EVERY:
            self.flush()
            self.draw()
        return self.iterations

    @closes_on_error
    def end_epoch(self, fake):
        """The epoch is done; fake: the generator's output on the fixed noise. Saves its grid and
        a checkpoint, redraws the pictures when due, prints the epoch's line."""
        seconds, rate = self.progress.epoch_time()  # the training's own time, before the work of the epoch's end
        self.flush()  # a divergence ends the run here, before a grid of it is drawn
        if self.world == 1:
            self.stopping = self.signals.signum
        else:
            self.agree()
        self.fake = self.as_images(fake).detach().cpu()
        if self.rank == 0:
            with self.picture(sample_name(self.epoch + 1), redrawn=False) as path:
                pictures.save_grid(self.fake, path, self.nrow)
        if self.reference and (self.epoch + 1) % self.args.eval_every == 0:
            measured = quality.measure(self.nets[0], self.fixed_noise.shape[1:], self.image_shape, self.reference,
                                       self.reference[2], self.args.seed)
            row = {"epoch": self.epoch + 1, **measured}
            self.quality_rows.append(row)
            self.log(f"epoch {self.epoch + 1} quality: {quality.line(row)}")
        self.save(self.epoch + 1, 0)
        ending = self.epoch + 1 == self.args.epochs or self.stopping is not None  # (then close() draws them, at once)
        if (time.monotonic() - self.drawn_at >= DRAW_EVERY or self.epoch == self.first_epoch) and not ending:
            self.draw()  # (also after the first epoch: the pictures appear early, and the ETA learns their cost)
        self.progress.end_epoch()
        self.log(f"epoch {self.epoch + 1}/{self.args.epochs} done in {seconds:.2f} s ({rate:.0f} img/s); "
                 f"run ETA {clock(self.progress.eta(self.batches))}")
        if self.stopping is not None and self.epoch + 1 < self.args.epochs:  # after the last one: finish
            self.exit_after_stop(self.epoch + 1, 0)

    @closes_on_error
    def finish(self):
        """The last epoch is done: the pictures drawn whole, a summary line, the folder given back."""
        if self.first_epoch < self.args.epochs:
            self.flush()
            self.close()
            if self.rank == 0:
                last = ", ".join(f"{n} {self.history.columns[n][-1]:.4f}" for n in self.losses) \
                    if self.history.columns["epoch"] else "no iterations"
                gpu = f"; peak GPU memory {peak_gpu_memory(self.device):.0f} MiB" if self.device.type == "cuda" else ""
                print(f"Done in {clock(time.monotonic() - self.progress.started)}; final {last}{gpu}. Outputs in "
                      f"{self.outdir}/: samples/, progress.gif, losses.png, history.csv, checkpoint.pt and the "
                      f"figures.")
        self.release()

    def log(self, line, file=None):
        """print() that keeps the progress bar intact."""
        from tqdm import tqdm
        tqdm.write(line, file=file)

    def means(self, names, k):
        """The means of the last k values of each named number (the course's display-step means)."""
        self.flush()
        return self.history.means(names, k)

    # -----------------------------------------------------------------------------------------
    # Saving, drawing, stopping
    # -----------------------------------------------------------------------------------------

    def flush(self):
        """The numbers into history (one host sync); a NaN or infinity ends the run (under torchrun
        at the next point where the processes agree, so that they all stop together)."""
        bad = self.history.flush()
        if bad and self.world == 1:
            self.diverged(bad)

    def agree(self):
        """torchrun: the processes agree on a stop and on a divergence (any one's counts for all)."""
        bad = self.history.flush()
        stop, diverged = agree(self.device, self.signals.signum or 0, self.nan_seen | (bad is not None))
        if diverged:
            self.diverged(bad)
        if stop:
            self.stopping = int(stop)

    def diverged(self, bad):
        self.close()
        self.wait_for_rank_0()
        where = f"in batch {bad[1] + 1} of {self.batches} of epoch {bad[0] + 1}/{self.args.epochs}" if bad \
            else "in another process"
        raise Diverged(f"training diverged: a loss or D's output became NaN or infinite {where}; the last "
                       f"checkpoint was left as it was. Try a lower --lr.")

    def save(self, epoch, iteration):
        """Everything needed to continue exactly from here: both nets and optimizers, the position
        (epoch, and iterations done in it), the fixed noise, the history and every RNG state."""
        self.flush()
        netG, netD, optimizerG, optimizerD = self.nets
        state = {
            "netG": bare(netG).state_dict(), "netD": bare(netD).state_dict(),
            "optimizerG": optimizerG.state_dict(), "optimizerD": optimizerD.state_dict(),
            "epoch": epoch, "iteration": iteration, "fixed_noise": self.fixed_noise,
            "history": self.history.tensors(), "rng": rng_states(), "settings": self.settings, "script": self.script,
            "image_shape": list(self.image_shape), "quality": self.quality_rows, "machine": self.machine,
            "data_files": self.dataloader.files}
        try:
            write_checkpoint(state, self.outdir, self.position(epoch, iteration))
        except UserError:  # (rank 0's disk is full: the one that writes)
            self.close()
            raise
        except Diverged:  # (the weights are the same in every process: all of them stop here)
            self.close()
            self.wait_for_rank_0()
            raise

    def draw(self, final=False):
        """Rewrite the derived pictures and history.csv from the history so far (rank 0). final:
        the run ends here (done, stopped or diverged): real beside fake too, the tutorial's last
        figure (a dearer one than the others, and of the last samples only)."""
        self.drawn_at = time.monotonic()
        if self.rank != 0 or (not self.history.columns["epoch"] and self.fake is None):
            return
        columns = self.history.columns
        with self.picture("history.csv") as path:  # (the rows since the last time, appended; after a failure: all)
            self.drawn["history.csv"] = pictures.write_csv(columns, path, self.drawn.pop("history.csv", 0))
        with self.picture("losses.png") as path:
            pictures.plot_curves(columns, self.losses, path, "Generator and Discriminator Loss During Training", "loss")
        if self.scores:
            with self.picture("scores.png") as path:
                pictures.plot_curves(columns, self.scores, path, "Discriminator outputs: D(x) on real, D(G(z)) on fake",
                                     "mean D output")
        if self.fake is not None and final:
            with self.picture("real_vs_fake.png") as path:
                pictures.real_vs_fake(self.real, self.fake, path, self.nrow)
        if self.quality_rows:
            with self.picture("quality.csv") as path:
                pictures.write_csv({k: [r[k] for r in self.quality_rows]
                                    for k in ("epoch", "FD", "smallest_share", "rarest_digit")}, path)
            with self.picture("quality.png") as path:
                quality.plot_over_epochs(self.quality_rows, path)
        gif_started, written = time.monotonic(), None
        with self.picture("progress.gif") as path:  # (when there are new samples: once an epoch)
            folder = os.path.join(self.outdir, "samples")
            pngs = sorted(f for f in os.listdir(folder) if re.fullmatch(RUN_FOLDERS["samples"], f))
            frames = [(f, os.path.getmtime(os.path.join(folder, f))) for f in pngs]
            if pngs and self.drawn.get("progress.gif") != frames:
                pictures.write_gif([os.path.join(folder, f) for f in pngs], path, self.gif,
                                   [f"epoch {int(f[6:10])}" for f in pngs])
                self.drawn["progress.gif"], written = frames, len(frames)
        now = time.monotonic()
        self.progress.drawn(now - self.drawn_at, now - gif_started if written else 0.0, written)
        self.drawn_at = now

    @contextlib.contextmanager
    def picture(self, name, redrawn=True):
        """Around writing one of the pictures (or history.csv) as <outdir>/name: they are derived
        from what the run holds, and most are drawn again at the next drawing (redrawn), so one that
        cannot be written costs a warning (said once), never the run (nor, as it ends, its exit)."""
        try:
            yield os.path.join(self.outdir, name)
        except Exception as e:  # (matplotlib, Pillow and imageio raise many kinds)
            if name not in self.not_drawn:
                self.not_drawn.add(name)
                why = cannot_write(e) if isinstance(e, OSError) else f"({type(e).__name__}: {first_line(e)[:200]})"
                after = ("the run ends without it." if self.closed else  # (close(): the last drawing)
                         "training goes on, and it is drawn again later." if redrawn else
                         "training goes on without it.")
                self.log(f"warning: could not write {name} {why}; {after}", file=sys.stderr)

    def exit_after_stop(self, epoch, i):
        """Ctrl-C or SIGTERM: the checkpoint is saved; say how to continue (before the pictures are
        brought up to date: a Ctrl-C now quits at once), and exit 128 + signal."""
        if self.rank == 0:
            print(f"Stopped {self.position(epoch, i)}; saved {os.path.join(self.outdir, 'checkpoint.pt')}. "
                  f"Continue with: {continue_command(self.world)}", file=sys.stderr, flush=True)
        self.close()
        self.wait_for_rank_0()
        sys.exit(128 + self.stopping)

    def wait_for_rank_0(self):
        """torchrun ends every process once one exits: the others wait until rank 0 has drawn."""
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self):
        """Bring the pictures up to the last good iteration (also when training diverged), and give
        the folder and the signals back. The signals first: everything is saved by now, so a Ctrl-C
        while the pictures are redrawn quits at once."""
        if self.closed:
            return
        self.closed = True
        if self.signals is not None:
            self.signals.restore()
        try:
            self.progress.close()
            self.history.flush()
            self.draw(final=True)
        finally:
            self.release()

    def release(self):
        if self.signals is not None:
            self.signals.restore()
        if self.folder is not None:
            self.folder.release()

    # -----------------------------------------------------------------------------------------

    def position(self, epoch, batch):
        """A place in the run, in words, counted as the epoch lines count: from 1, with the batches
        done. (epoch, batch): epochs done, and batches done in the next one."""
        if batch == 0:
            return f"after epoch {epoch}/{self.args.epochs}" if epoch else "before the first epoch"
        return f"in epoch {epoch + 1}/{self.args.epochs} after batch {batch} of {self.batches}"

    def as_images(self, output):
        """The generator's output in the shape of the training images (gan_mnist's G makes vectors)."""
        return output.reshape(-1, *self.image_shape)


def sample_name(epoch):
    return os.path.join("samples", f"epoch_{epoch:04d}.png")
