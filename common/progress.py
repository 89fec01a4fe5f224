"""Progress: a bar for each epoch (on a terminal only) and the run's ETA.

The ETA counts everything the user still waits for: the batches left at the recent pace (the
work after each epoch included; the run's first iteration, slowed by warming up, left out from
the second on, and the first epoch once a second is under way), the pictures still to be drawn
on their cadence, the last, largest drawing at the end, and the process's exit.

    progress = Progress(epochs, batches, batch_size, n_images, draw_every)
    progress.start_epoch(epoch, first_batch)
    progress.batch_done(batch)           # after each iteration
    progress.drawn(seconds, gif_seconds, frames)  # after each drawing of the pictures (and its GIF's)
    progress.epoch_time()                # the epoch's training time, before the work at its end
    progress.end_epoch()                 # then progress.eta(...)
"""
import collections
import sys
import time

# The ETA's pace is measured over about this many seconds of the latest wall time: long enough to
# average in several drawings of the pictures, short enough to follow a pace that drifts.
PACE_WINDOW = 120
# What the process takes to end after its last line: Python unloading torch and its libraries
# (0.7 to 1.7 s measured on a 2-core CPU; see BENCHMARKS.md).
EXIT_SECONDS = 1.0


class Progress:
    def __init__(self, epochs, batches, batch_size, n_images, draw_every):
        self.epochs, self.batches, self.batch_size, self.n_images = epochs, batches, batch_size, n_images
        self.draw_every = draw_every
        self.started = time.monotonic()
        self.batches_done = 0
        self.draw_total = 0.0  # seconds spent drawing the pictures so far
        self.plot_seconds = 0.0  # the latest drawing, all but the GIF
        self.gifs = []  # (frames, seconds) of each GIF written: its cost grows with the frames
        self.marks = collections.deque([(self.started, 0, 0.0)])  # (time, batches done, drawing seconds)
        self.warm_up, self.epochs_done = self.marks[0], 0
        self.bar, self.epoch, self.first_batch, self.epoch_started = None, 0, 0, self.started

    def start_epoch(self, epoch, first_batch):
        self.epoch, self.first_batch, self.epoch_started = epoch, first_batch, time.monotonic()
        self.bar = progress_bar(self.batches, first_batch, f"epoch {epoch + 1}/{self.epochs}")

    def batch_done(self, batch):
        """Iteration `batch` of the epoch is done."""
        self.batches_done += 1
        if self.batches_done == 1:  # the first iteration warms up (first allocations, kernel choices, compiling)
            self.marks[0] = (time.monotonic(), 1, self.draw_total)  # the pace is measured from its end
        self.bar.update(1)
        if self.bar.n % 10 == 0 and self.on_terminal():
            rate = (self.bar.n - self.first_batch) / max(time.monotonic() - self.epoch_started, 1e-9)
            self.bar.set_postfix_str(f"{rate * self.batch_size:.0f} img/s, run ETA {clock(self.eta(batch + 1))}",
                                     refresh=False)

    def drawn(self, seconds, gif_seconds=0.0, frames=None):
        """The pictures were drawn, in `seconds`, gif_seconds of them for a GIF of `frames` frames
        (frames None: the GIF had no new frame, and was left as it was)."""
        self.draw_total += seconds
        self.plot_seconds = seconds - gif_seconds
        if frames is not None:
            self.gifs.append((frames, gif_seconds))

    def gif_seconds(self, frames):
        """What writing the GIF will cost at `frames` frames: a line through the first GIF written
        and the latest (one GIF: as long as it took, whatever the frames)."""
        (f0, s0), (f1, s1) = self.gifs[0], self.gifs[-1]
        per_frame = max(0.0, (s1 - s0) / (f1 - f0)) if f1 > f0 else 0.0
        return s1 + per_frame * (frames - f1)

    def epoch_time(self):
        """(seconds, images per second) of the epoch's training so far."""
        seconds = time.monotonic() - self.epoch_started
        images = min((self.batches - self.first_batch) * self.batch_size, self.n_images)
        return seconds, images / max(seconds, 1e-9)

    def end_epoch(self):
        """The epoch's work (its training and what follows it) is done: close its bar."""
        self.bar.close()
        self.epochs_done += 1
        self.marks.append((time.monotonic(), self.batches_done, self.draw_total))
        if self.epochs_done == 1:
            self.warm_up = self.marks.popleft()  # the first epoch warms up: no pace to go by, once there is another

    def on_terminal(self):
        """Whether the bar shows (with the ETA): on a terminal, and under torchrun in rank 0 only."""
        return self.bar is not None and not self.bar.disable

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def eta(self, next_batch):
        """Seconds the run still needs, with `next_batch` the next batch of the current epoch."""
        now = time.monotonic()
        while len(self.marks) > 1 and now - self.marks[1][0] >= PACE_WINDOW:
            self.marks.popleft()
        since, batches, drawn = self.marks[0]
        if batches == self.batches_done:  # nothing done since the first epoch ended: its pace is all there is
            since, batches, drawn = self.warm_up
        pace = (now - since - (self.draw_total - drawn)) / max(self.batches_done - batches, 1)
        left = (self.epochs - self.epoch - 1) * self.batches + self.batches - next_batch
        # The pictures: redrawn every draw_every seconds while training goes on, and once more at the
        # end, each costing the latest drawing's plots; the GIF is rewritten by the first drawing
        # after each epoch's end (a new frame), at the frames it will have then.
        if not self.gifs:
            return left * pace + EXIT_SECONDS
        frames_now, frames_end = self.epoch + 1 + (next_batch >= self.batches), self.epochs + 1
        drawings = left * pace / max(self.draw_every, pace)  # (at most one after each batch)
        new_frames = self.epochs - frames_now  # (epoch ends still to come, but the last: the end's drawing)
        during = drawings * self.plot_seconds + min(drawings, new_frames) * self.gif_seconds(
            (frames_now + frames_end) / 2)
        last = self.plot_seconds + self.gif_seconds(frames_end)
        return left * pace + during + last + EXIT_SECONDS


def progress_bar(total, initial, desc):
    """A tqdm bar for one epoch, only on a terminal: in a log file the per-epoch lines are the progress."""
    from tqdm import tqdm
    from .device import rank_and_world
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=not sys.stderr.isatty() or rank_and_world()[0] != 0)  # under torchrun: rank 0's bar


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
