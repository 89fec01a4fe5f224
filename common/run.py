"""Run: the record of one training run (its folder, settings, position, history and checkpoints),
and the bookkeeping that follows from what the script tells it. Not a trainer: the loop, the
models and every backward() / step() stay in the script.

    run = common.Run("dcgan_celeba", args, netG, netD, optimizerG, optimizerD, fixed_noise,
                     dataloader, losses=[...], scores=[...])  # --outdir claimed; --resume restores all
    fixed_noise = run.fixed_noise                              # (the saved one on --resume)
    for epoch in run.epochs():
        for i, data in enumerate(dataloader, dataloader.start):
            ...                                     # the tutorial's step
            run.step(i, errD, errG, ...)            # history, NaN stop, checkpoints, Ctrl-C
        run.end_epoch(netG(fixed_noise))            # grid, checkpoint, pictures, the epoch's line
    run.finish()

What lands in --outdir, and when: common/outdir.py, OUTPUTS. The pictures are drawn by
common/pictures.py, Pictures. Each piece it uses reads alone: outdir (the folder's lock), history
(the numbers, kept on the device), signals (Ctrl-C and SIGTERM), progress (the bar and the ETA),
checkpoints, pictures.
"""
import functools
import logging
import os
import sys
import time

import torch

from . import quality
from .average import Average
from .checkpoints import (check_settings, load_checkpoint, rng_states, set_rng_states, write_best,
                          write_checkpoint)
from .data import what_changed
from .device import bare, data_parallel_gpus, peak_gpu_memory, rank_and_world, what_the_bits_depend_on
from .errors import Diverged
from .history import History, watch_for_nan
from .outdir import check_new_run, claim, delete_old_run
from .pictures import Pictures, plural
from .progress import Progress, clock
from .signals import StopSignals, agree, continue_command

# Under torchrun the processes agree on a stop (and on a divergence) every this many iterations,
# and at every save: one small collective and a host sync each time.
AGREE_EVERY = 10
log = logging.getLogger("common")  # (debug lines: how long each save took, for benchmarks/rehearsal.py)


def closes_on_error(method):
    """Whatever ends the run inside its bookkeeping (a stop, a divergence, a full disk, a bug) closes
    it on the way out: see Run.close."""
    @functools.wraps(method)
    def closing(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BaseException as e:
            self.close(together=isinstance(e, (Diverged, SystemExit)))  # (a stop or a divergence: every process)
            raise
    return closing


class Run:
    """One run's folder, settings, history and position.

    script: the script's name (recorded in the checkpoint); args: its parsed flags; the two nets,
    their optimizers, the fixed noise and the dataloader, as the script made them; losses,
    scores: the names of the numbers run.step() is given, in that order (plotted in losses.png,
    scores.png); nrow: images per row in the sample grids; real_grid: the real images' grid file;
    frames: what progress.gif animates: "epochs" (the per-epoch sample grids) or "kept" (the grids
    the script keeps with run.keep_frame(), as the DCGAN tutorial keeps img_list).
    """

    def __init__(self, script, args, netG, netD, optimizerG, optimizerD, fixed_noise, dataloader, *,
                 losses, scores=(), nrow=8, real_grid="real_images.png", frames="epochs"):
        self.script, self.args, self.outdir = script, args, args.outdir
        self.nets, self.dataloader = (netG, netD, optimizerG, optimizerD), dataloader
        self.losses, self.scores, self.epoch_frames = list(losses), list(scores), frames == "epochs"
        self.device, self.batches = fixed_noise.device, len(dataloader)
        self.rank, self.world = rank_and_world()
        # What is computed: the flags that change the math, and what the script made of them (the
        # data, and over how many parts of each batch BatchNorm computes its statistics)
        self.settings = {k: getattr(args, k) for k in sorted(args.math_defaults)}
        self.settings.update(data=dataloader.id, processes=self.world, data_parallel_gpus=data_parallel_gpus(netD))
        self.defaults = {**args.math_defaults, "processes": 1, "data_parallel_gpus": 1}
        self.machine = what_the_bits_depend_on(self.device, deterministic=not args.cudnn_benchmark)
        real = dataloader.first_images(len(fixed_noise))
        self.image_shape = tuple(real.shape[1:])
        # Where the run is, and what it has recorded (restore() sets these on --resume)
        self.first_epoch = self.first_batch = self.epoch = self.batch = self.iterations = 0
        self.history, self.quality_rows, frames = History(self.losses + self.scores), [], []
        self.stopping, self.closed, self.signals, self.progress = None, False, None, None
        self.average = Average(netG, dataloader.batch_size) if args.ema else None  # (--ema: G's weights averaged)
        self.folder = claim(self.outdir) if self.rank == 0 else None  # one command at a time in --outdir
        try:
            if args.resume:
                fixed_noise, frames = self.restore()  # (the saved ones)
            elif self.rank == 0:
                check_new_run(self.outdir, args.overwrite)
            self.fixed_noise = fixed_noise
            self.pictures = Pictures(self.outdir, real, nrow, self.losses, self.scores, frames, draws=self.rank == 0)
            if not args.resume:
                self.begin(real, real_grid)
            self.eval_every = args.epochs // 10 if args.eval_every is None else args.eval_every  # (None: the default)
            self.judge = self.quality_judge() if self.eval_every else None
            self.nan_seen = watch_for_nan(netD, self.device)
            self.signals = StopSignals()  # from here, Ctrl-C and SIGTERM save and stop
        except BaseException:
            self.close(draw=False)
            raise
        self.progress = Progress(args.epochs, self.batches, dataloader.batch_size, dataloader.n)

    def begin(self, real, real_grid):
        """A new run: the old one deleted with --overwrite; the real images and epoch 0 drawn."""
        if self.rank == 0:
            if self.args.overwrite:
                delete_old_run(self.outdir)
            with torch.no_grad():  # (the bare G: DDP's wrapper is for all processes at once)
                fake = self.as_images(bare(self.nets[0])(self.fixed_noise)).cpu()
            self.pictures.grid(real_grid, real)
            self.pictures.grid(sample_name(0), fake, frame="epoch 0" if self.epoch_frames else None)

    def restore(self):
        """--resume: both nets and optimizers, the position, the history and every RNG state, after
        checking that no setting that changes the math differs. Returns the saved fixed noise and
        the frames of progress.gif so far."""
        ckpt = load_checkpoint(self.outdir, self.script)
        check_settings(ckpt["settings"], self.settings, self.defaults,
                       explain={"data": lambda: what_changed(ckpt.get("data_files"), self.dataloader.files)})
        netG, netD, optimizerG, optimizerD = self.nets
        bare(netG).load_state_dict(ckpt["netG"])
        bare(netD).load_state_dict(ckpt["netD"])
        optimizerG.load_state_dict(ckpt["optimizerG"])
        optimizerD.load_state_dict(ckpt["optimizerD"])
        set_rng_states(ckpt["rng"])
        if self.average:
            self.average.load_state_dict(ckpt["average"])
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
        # (checkpoints written before they kept the frames: one per epoch)
        frames = ckpt.get("frames") or [[sample_name(e), f"epoch {e}"] for e in range(self.first_epoch + 1)]
        return ckpt["fixed_noise"].to(self.device), frames

    def quality_judge(self):
        """--eval-every: what the samples are measured with (common/quality.py: digits by the reference
        classifier, faces by FID), made before the first epoch, so that a missing piece (Inception's
        weights) is said at once. Without real images (--fake-data) nothing is measured."""
        if self.args.fake_data:
            if self.args.eval_every is not None:  # (asked for: say why not)
                print(f"notice: --eval-every measures samples against real {quality.kind(self.dataloader)}, and "
                      f"--fake-data has none: not measured.")
            return None
        return quality.judge(self.args, self.dataloader, self.image_shape, quality.SAMPLES_DURING_TRAINING)

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
        if self.average:
            self.average.update(self.nets[0])
        self.batch, self.iterations = i + 1, self.iterations + 1
        self.progress.batch_done(i)
        if self.batch < self.batches:  # (after an epoch's last batch end_epoch saves, and stops, at once)
            save_due = self.iterations % self.args.checkpoint_every == 0
            if self.stop_asked(now=save_due) or save_due:
                self.save(self.epoch, self.batch)
            if self.stopping is not None:
                self.stop(self.epoch, self.batch)
            if save_due and not self.progress.on_terminal() and self.rank == 0:  # (a log file has no bar)
                self.log(f"checkpoint.pt saved {self.position(self.epoch, self.batch)}; "
                         f"run ETA {clock(self.progress.eta(self.batch))}")
        if self.pictures.due():
            self.draw()
        return self.iterations

    @closes_on_error
    def end_epoch(self, fake):
        """The epoch is done; fake: the generator's output on the fixed noise. Saves its grid and
        a checkpoint, redraws the pictures when due, prints the epoch's line."""
        seconds, rate = self.progress.epoch_time()  # the training's own time, before the work of the epoch's end
        self.flush()  # a divergence ends the run here, before a grid of it is drawn
        stopping, done = self.stop_asked(now=True), self.epoch + 1
        self.pictures.grid(sample_name(done), self.as_images(fake).detach().cpu(),
                           frame=f"epoch {done}" if self.epoch_frames else None)
        if self.judge and done % self.eval_every == 0:
            self.measure(done)
        self.save(done, 0)
        if self.pictures.due() and not (done == self.args.epochs or stopping):  # (then close() draws them, at once)
            self.draw()
        self.progress.end_epoch()
        self.log(f"epoch {done}/{self.args.epochs} done in {seconds:.2f} s ({rate:.0f} img/s); "
                 f"run ETA {clock(self.progress.eta(self.batches))}")
        if stopping and done < self.args.epochs:  # (after the last one: finish)
            self.stop(done, 0)

    @closes_on_error
    def finish(self):
        """The last epoch is done: the pictures drawn whole, a summary line, the folder given back."""
        trained = self.first_epoch < self.args.epochs  # (a resume of a finished run leaves everything as it was)
        if trained:
            self.flush()
        self.close(draw=trained, together=True)
        if trained and self.rank == 0:
            last = ", ".join(f"{n} {self.history.columns[n][-1]:.4f}" for n in self.losses) \
                if self.history.columns["epoch"] else "no iterations"
            gpu = f"; peak GPU memory {peak_gpu_memory(self.device):.0f} MiB" if self.device.type == "cuda" else ""
            print(f"Done in {clock(time.monotonic() - self.progress.started)}; final {last}{gpu}. Outputs in "
                  f"{self.outdir}/: samples/, progress.gif, losses.png, history.csv, checkpoint.pt and the figures.")

    def log(self, line, file=None):
        """print() that keeps the progress bar intact."""
        from tqdm import tqdm
        tqdm.write(line, file=file)

    def means(self, names, k):
        """The means of the last k values of each named number (the course's display-step means)."""
        self.flush()
        return self.history.means(names, k)

    @closes_on_error
    def keep_frame(self, fake, iters):
        """The DCGAN tutorial's img_list.append(...): fake (G's output on the fixed noise after
        iteration iters) kept as frames/iteration_<iters>.png, the next frame of progress.gif (in
        the checkpoint's list of frames: a resumed run gets those of a run that never stopped)."""
        self.pictures.grid(f"frames/iteration_{iters:06d}.png", self.as_images(fake).detach().cpu(),
                           frame=f"iteration {iters}")

    def measure(self, epoch):
        """--eval-every: the generator measured (and --ema's average beside it), as many samples as
        the judge has real images (at most quality.SAMPLES_DURING_TRAINING); the best so far kept
        in best.pt. Nothing the training draws from is touched (common/quality.py)."""
        score, best = self.judge.score, min((row[self.judge.score] for row in self.quality_rows), default=None)
        for generator, net in [("live", self.nets[0])] + ([("average", self.average.net)] if self.average else []):
            started = time.monotonic()
            row = {"epoch": epoch, "generator": generator,
                   **self.judge.measure(net, self.fixed_noise.shape[1:], self.image_shape, self.judge.n_real,
                                        self.args.seed)}
            self.quality_rows.append(row)
            self.log(f"epoch {epoch} quality of the {generator} generator: {self.judge.line(row)}")
            log.debug("measured the %s generator in %.3f s", generator, time.monotonic() - started)
            if best is None or row[score] < best:
                best = row[score]
                write_best(bare(net), self.outdir, epoch, generator, score, best)

    # -----------------------------------------------------------------------------------------
    # Saving, drawing, stopping
    # -----------------------------------------------------------------------------------------

    def flush(self):
        """The numbers into history (one host sync); a NaN or infinity ends the run (under torchrun
        at the next point where the processes agree, so that they all stop together)."""
        bad = self.history.flush()
        if bad and self.world == 1:
            self.diverged(bad)

    def stop_asked(self, now=False):
        """Whether Ctrl-C or SIGTERM asked the run to stop. Under torchrun: whether one asked any
        process (or any diverged), agreed every AGREE_EVERY iterations and when `now`, so that all
        of them stop at the same iteration."""
        if self.world == 1:
            self.stopping = self.signals.signum
        elif now or self.iterations % AGREE_EVERY == 0:
            bad = self.history.flush()
            stop, diverged = agree(self.device, self.signals.signum or 0, self.nan_seen | (bad is not None))
            if diverged:
                self.diverged(bad)
            if stop:
                self.stopping = int(stop)
        return self.stopping is not None

    def diverged(self, bad):
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
            "data_files": self.dataloader.files, "frames": self.pictures.frames,
            "average": self.average.state_dict() if self.average else None}
        started = time.monotonic()
        write_checkpoint(state, self.outdir, self.position(epoch, iteration))
        log.debug("saved checkpoint.pt in %.3f s (epoch %d, iteration %d)", time.monotonic() - started, epoch,
                  iteration)

    def draw(self):
        self.flush()
        self.pictures.draw(self.history.columns, self.quality_rows)

    def stop(self, epoch, batch):
        """Ctrl-C or SIGTERM, saved at (epoch, batch): say how to continue (before the pictures are
        brought up to date: a Ctrl-C now quits at once), and exit 128 + the signal."""
        if self.rank == 0:
            print(f"Stopped {self.position(epoch, batch)}; saved {os.path.join(self.outdir, 'checkpoint.pt')}. "
                  f"Continue with: {continue_command(self.world)}", file=sys.stderr, flush=True)
        sys.exit(128 + self.stopping)

    def close(self, draw=True, together=False):
        """The one way out of a run, however it ends. The signals are given back first (everything
        is saved by now, so a Ctrl-C while the pictures are redrawn quits at once); draw: the
        pictures brought up to the last good iteration (also when training diverged); the folder
        is given back. together: every process leaves here (done, stopped, diverged), and under
        torchrun, which ends them all once one exits, the others wait until rank 0 has drawn."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.signals is not None:
                self.signals.restore()
            if self.progress is not None:
                self.progress.close()
                if draw:
                    self.history.flush()
                    self.pictures.draw(self.history.columns, self.quality_rows, final=True)
        finally:
            if self.folder is not None:
                self.folder.release()
            if together and self.world > 1:
                import torch.distributed as dist
                dist.barrier()

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
    return f"samples/epoch_{epoch:04d}.png"
