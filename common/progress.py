"""Progress: a bar for each epoch (on a terminal only) and the run's ETA.

The ETA is the batches left at the pace of the latest PACE_WINDOW seconds of wall time, and the
run's end. That time holds everything the run does between two batches (the drawings, the saves,
each epoch's end), so nothing of it is modelled apart. Left out of the pace: the first iteration
(it warms up: first allocations, kernel choices, compiling), and the first epoch once a second one
is under way.

    progress = Progress(epochs, batches, batch_size, n_images)
    progress.start_epoch(epoch, first_batch)
    progress.batch_done(batch)           # after each iteration
    progress.epoch_time()                # the epoch's training time, before the work at its end
    progress.end_epoch()                 # then progress.eta(...)
"""
import logging
import sys
import time

# The pace is measured over about this many seconds of the latest wall time (from an epoch's end):
# long enough to average in several drawings of the pictures, short enough to follow a pace that drifts.
PACE_WINDOW = 120
# What follows the last batch: the last drawing and the process's exit (1.1 s and 1.4 s at the end of
# a 60-epoch gan_mnist.py run on a 2-core CPU; BENCHMARKS.md).
END_SECONDS = 2.5
log = logging.getLogger("common")  # (debug lines: the ETA every few seconds, for benchmarks/rehearsal.py)


class Progress:
    def __init__(self, epochs, batches, batch_size, n_images):
        self.epochs, self.batches, self.batch_size, self.n_images = epochs, batches, batch_size, n_images
        self.started = time.monotonic()
        self.batches_done = 0
        self.first = (self.started, 0)  # (time, batches done) where the pace is measured from before an epoch ends
        self.epoch_ends = []  # (time, batches done) at the end of each epoch
        self.bar, self.epoch, self.first_batch, self.epoch_started = None, 0, 0, self.started
        self.logged_at = 0.0

    def start_epoch(self, epoch, first_batch):
        self.epoch, self.first_batch, self.epoch_started = epoch, first_batch, time.monotonic()
        self.bar = progress_bar(self.batches, first_batch, f"epoch {epoch + 1}/{self.epochs}")

    def batch_done(self, batch):
        """Iteration `batch` of the epoch is done."""
        self.batches_done += 1
        if self.batches_done == 1:  # (the first iteration warms up: the pace is measured from its end)
            self.first = (time.monotonic(), 1)
        self.bar.update(1)
        if self.bar.n % 10 == 0 and self.on_terminal():
            rate = (self.bar.n - self.first_batch) / max(time.monotonic() - self.epoch_started, 1e-9)
            self.bar.set_postfix_str(f"{rate * self.batch_size:.0f} img/s, run ETA {clock(self.eta(batch + 1))}",
                                     refresh=False)
        if log.isEnabledFor(logging.DEBUG) and time.monotonic() - self.logged_at >= 5:
            self.logged_at = time.monotonic()
            log.debug("%d batches done; run ETA %.1f s", self.batches_done, self.eta(batch + 1))

    def epoch_time(self):
        """(seconds, images per second) of the epoch's training so far."""
        seconds = time.monotonic() - self.epoch_started
        images = min((self.batches - self.first_batch) * self.batch_size, self.n_images)
        return seconds, images / max(seconds, 1e-9)

    def end_epoch(self):
        """The epoch's work (its training and what follows it) is done: close its bar."""
        self.bar.close()
        self.epoch_ends.append((time.monotonic(), self.batches_done))

    def on_terminal(self):
        """Whether the bar shows (with the ETA): on a terminal, and under torchrun in rank 0 only."""
        return self.bar is not None and not self.bar.disable

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def eta(self, next_batch):
        """Seconds the run still needs, with `next_batch` the next batch of the current epoch."""
        now = time.monotonic()
        ends = [end for end in self.epoch_ends if end[1] < self.batches_done]  # (with batches done since)
        recent = [end for end in ends if now - end[0] <= PACE_WINDOW]
        since, done = (recent or ends[-1:] or [self.first])[0]
        pace = (now - since) / max(self.batches_done - done, 1)
        return pace * ((self.epochs - self.epoch - 1) * self.batches + self.batches - next_batch) + END_SECONDS


def progress_bar(total, initial, desc):
    """A tqdm bar for one epoch, only on a terminal: in a log file the per-epoch lines are the progress."""
    from tqdm import tqdm
    from .device import rank_and_world
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=not sys.stderr.isatty() or rank_and_world()[0] != 0)  # under torchrun: rank 0's bar


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
