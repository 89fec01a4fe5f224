"""Pictures: what a run draws (class Pictures), and the drawing itself: sample grids, the progress
GIF, loss and score plots, real beside fake, the quality plots and the CSV files."""
import contextlib
import logging
import os
import sys
import time

import imageio.v3 as iio
import numpy as np
import torch
import torchvision.utils as vutils
from matplotlib.figure import Figure  # a figure drawn to files only: no window, nothing global (no pyplot)

from .errors import cannot_write, first_line
from .outdir import output, replaced_file

# The derived pictures are redrawn at most this often (seconds of wall time): drawing after every
# epoch would cost a short-epoch run (gan_mnist: 0.4 s per epoch on a CPU) most of its time.
DRAW_EVERY = 30
LABEL_COLOURS = [(0, 0, 0), (255, 255, 0)]  # the epoch written on each GIF frame: yellow on black
log = logging.getLogger("common")  # (debug lines: how long each drawing took, for benchmarks/rehearsal.py)


class Pictures:
    """What one run draws into --outdir (rank 0 only; elsewhere every call does nothing).

        pictures = Pictures(outdir, real, nrow, losses, scores, frames, draws=rank == 0)
        pictures.grid("samples/epoch_0001.png", fake, frame="epoch 1")  # a grid; frame: also the GIF's next
        if pictures.due(): pictures.draw(history.columns, quality_rows)  # every DRAW_EVERY seconds
        pictures.draw(history.columns, quality_rows, final=True)         # as the run ends

    draw() writes history.csv (its new rows), losses.png, scores.png, quality.csv, quality.png,
    progress.gif (when a frame is new) and, as the run ends, real_vs_fake.png. All of them are
    derived from what the run holds, so none ever costs the run: one that cannot be written is a
    warning, said once, and training goes on.
    """

    def __init__(self, outdir, real, nrow, losses, scores, frames=(), draws=True):
        self.outdir, self.real, self.nrow, self.losses, self.scores = outdir, real, nrow, losses, scores
        self.frames = list(frames)  # [name, label] of each frame of progress.gif so far (the checkpoint keeps them)
        self.draws, self.fake, self.ending, self.failed = draws, None, False, set()
        self.csv_rows = self.gif_frames = 0  # what history.csv and progress.gif hold, as this process wrote them
        self.gif = GifFrames(palette_of(real, nrow)) if draws else None
        self.drawn_at = time.monotonic()

    def grid(self, name, images, frame=None):
        """Write images as the grid <outdir>/name (once: one that fails is left out); frame: its
        label, which makes it the next frame of progress.gif too (and its images the latest samples)."""
        if not self.draws:
            return
        with self.safely(name, redrawn=False) as path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_grid(images, path, self.nrow)
            if frame is not None:  # (a grid that could not be written is no frame)
                self.frames.append([name, frame])
                self.fake = images

    def due(self):
        return time.monotonic() - self.drawn_at >= DRAW_EVERY

    def draw(self, columns, quality_rows=(), final=False):
        """Everything derived from the history so far (columns: History.columns) and the quality
        measurements. final: the run ends here (done, stopped or diverged): real beside fake too,
        the tutorial's last figure (a dearer one than the others, and of the latest samples only)."""
        started, self.ending = time.monotonic(), final
        if not self.draws or not columns["epoch"]:
            return
        with self.safely("history.csv") as path:  # (the rows since the last time, appended; after a failure: all)
            rows, self.csv_rows = self.csv_rows, 0
            self.csv_rows = write_csv(columns, path, rows)
        with self.safely("losses.png") as path:
            plot_curves(columns, self.losses, path, "Generator and Discriminator Loss During Training", "loss")
        if self.scores:
            with self.safely("scores.png") as path:
                plot_curves(columns, self.scores, path, "Discriminator outputs: D(x) on real, D(G(z)) on fake",
                            "mean D output")
        if quality_rows:
            score = "FD" if "FD" in quality_rows[0] else "FID"
            best = min(range(len(quality_rows)), key=lambda k: quality_rows[k][score])  # (the one in best.pt)
            fields = ["epoch", "generator", score] + [f for f in ("smallest_share", "rarest_digit") if f in
                                                       quality_rows[0]]
            with self.safely("quality.csv") as path:
                write_csv({**{f: [r.get(f, "live") for r in quality_rows] for f in fields},
                           "best": [int(k == best) for k in range(len(quality_rows))]}, path)
            with self.safely("quality.png") as path:
                plot_over_epochs(quality_rows, path, score, best)
        if len(self.frames) > self.gif_frames:  # (a new frame: once an epoch)
            with self.safely("progress.gif") as path:
                write_gif([os.path.join(self.outdir, name) for name, _ in self.frames], path, self.gif,
                          [label for _, label in self.frames])
                self.gif_frames = len(self.frames)
        if final and self.fake is not None:
            with self.safely("real_vs_fake.png") as path:
                real_vs_fake(self.real, self.fake, path, self.nrow)
        self.drawn_at = time.monotonic()
        log.debug("drew the pictures in %.3f s (%d rows%s)", self.drawn_at - started, len(columns["epoch"]),
                  ", final" if final else "")

    @contextlib.contextmanager
    def safely(self, name, redrawn=True):
        """Around writing <outdir>/name: a failure costs a warning (said once), never the run (nor,
        as it ends, its exit). redrawn: whether the next drawing writes it again."""
        try:
            yield output(self.outdir, name)
        except Exception as e:  # (matplotlib, Pillow and imageio raise many kinds)
            if name not in self.failed:
                self.failed.add(name)
                why = cannot_write(e) if isinstance(e, OSError) else f"({type(e).__name__}: {first_line(e)[:200]})"
                after = ("the run ends without it." if self.ending else
                         "training goes on, and it is drawn again later." if redrawn else
                         "training goes on without it.")
                from tqdm import tqdm
                tqdm.write(f"warning: could not write {name} {why}; {after}", file=sys.stderr)


def to_pixels(images):
    """[-1, 1] -> [0, 1]."""
    return images.detach().float().cpu().add(1).div(2).clamp(0, 1)


def save_grid(images, path, nrow=8):
    with replaced_file(path, ".png") as tmp:  # (every picture: the old one or the new one whole)
        vutils.save_image(to_pixels(images), tmp, nrow=nrow, padding=2)


def to_uint8(images):
    """[-1, 1] -> uint8, rounded as save_image rounds (what a PNG of them holds)."""
    return to_pixels(images).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def save_png(pixels, path):
    """One uint8 image (C x H x W) as a PNG: grayscale for one channel, RGB for three."""
    from PIL import Image
    pixels = pixels.permute(1, 2, 0).numpy()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)


# ---------------------------------------------------------------------------------------------
# The progress GIF
# ---------------------------------------------------------------------------------------------

def palette_of(images, nrow=8):
    """A GIF palette for pictures of these images (and their yellow-on-black labels): 256 distinct
    colours, as 768 bytes."""
    from PIL import Image
    grid = vutils.make_grid(to_pixels(images), nrow=nrow, padding=2).mul(255).add_(0.5).clamp_(0, 255)
    grid = Image.fromarray(grid.to(torch.uint8).permute(1, 2, 0).numpy())
    q = grid.quantize(colors=254, dither=Image.Dither.NONE)
    used = q.getpalette()[:3 * len(q.getcolors())]
    colours = list(dict.fromkeys(LABEL_COLOURS + [tuple(used[k:k + 3]) for k in range(0, len(used), 3)]))
    filler = ((k % 256, k * 7 % 256, k * 13 % 256) for k in range(1, 10**6))  # unused entries: distinct too
    while len(colours) < 256:
        c = next(filler)
        if c not in colours:
            colours.append(c)
    return bytes(v for c in colours[:256] for v in c)


class GifFrames:
    """The frames of a GIF, each reduced once to one fixed palette (see palette_of) and kept, so
    that rewriting a GIF of a growing list of PNGs costs the new frames, not the whole run again."""

    def __init__(self, palette):
        from PIL import Image
        self.palette = palette
        self.palette_image = Image.new("P", (1, 1))
        self.palette_image.putpalette(palette)
        self.frames = {}

    def frame(self, png, label=None):
        """The frame of one PNG, its label drawn on it: palette indices, H x W."""
        from PIL import Image, ImageDraw
        key = (png, label)  # (a frame's file is written once)
        if key not in self.frames:
            image = Image.open(png).convert("RGB")
            if label:
                draw = ImageDraw.Draw(image)
                draw.rectangle([0, 0, 6 * len(label) + 6, 13], fill=LABEL_COLOURS[0])
                draw.text((3, 1), label, fill=LABEL_COLOURS[1])
            self.frames[key] = np.asarray(image.quantize(palette=self.palette_image, dither=Image.Dither.NONE))
        return self.frames[key]


def write_gif(pngs, path, frames, labels=None, ms_per_frame=400):
    """A GIF of the given PNG files (frames: their GifFrames), each frame labelled (e.g. with its epoch)."""
    indices = np.stack([frames.frame(png, labels[k] if labels else None) for k, png in enumerate(pngs)])
    durations = [ms_per_frame] * (len(pngs) - 1) + [ms_per_frame * 4]  # linger on the result
    # The frames are palette indices, handed over as "L" images with the palette: Pillow's GIF
    # writer then takes them as they are ("P" frames made from an array carry no palette of their
    # own, and Pillow would search every colour of `palette` in each of them, slower than writing).
    # One frame gets one duration: Pillow's single-frame writer takes a number, not a list. The GIF
    # is made in memory, then written: a write that fails (a full disk) raises here, once.
    gif = iio.imwrite("<bytes>", indices, extension=".gif", mode="L", palette=frames.palette, loop=0,
                      duration=durations if len(durations) > 1 else durations[0])
    with replaced_file(path) as tmp, open(tmp, "wb") as f:
        f.write(gif)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------

def smooth(values, weight):
    """Exponential moving average, debiased at the start, as TensorBoard smooths curves."""
    out, avg = [], 0.0
    for k, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** k))
    return out


def smoothing_weight(n):
    """The EMA weight for a curve of n points: an average over about 2 % of the run, at most 50
    iterations (weight 0.98), so that a short run's curve does not lag behind it."""
    span = min(50.0, max(1.0, n / 50))
    return 1 - 1 / span


def plot_curves(history, names, path, title, ylabel):
    """Raw curves (faint) and their smoothed versions over iterations, epochs marked."""
    fig = Figure(figsize=(10, 5))
    ax = fig.subplots()
    n = len(history["epoch"])
    every = max(1, n // 3000)  # a 1000-pixel-wide plot has no use for more points
    steps = range(0, n, every)
    for name in names:
        line, = ax.plot(steps, history[name][::every], alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth(history[name], smoothing_weight(n))[::every], color=line.get_color(), label=name)
    starts = epoch_starts(history["epoch"])
    marked = len(starts) <= 60
    for k in list(starts.values())[1:] if marked else []:
        ax.axvline(k, color="grey", linewidth=0.5, alpha=0.5)
    if not marked:  # too many epochs for lines: label the x axis in epochs instead, at round numbers
        ticks = epoch_ticks(history["epoch"])
        ax.set_xticks(list(ticks), [str(e) for e in ticks.values()])
    ax.set(title=title, ylabel=ylabel,
           xlabel="iterations (grey lines: epoch starts)" if marked else "epochs done")
    ax.legend()
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.1, top=0.93)  # (tight_layout would take a third more)
    save_figure(fig, path, tight=False)


def save_figure(fig, path, tight=True):
    if tight:
        fig.tight_layout()
    with replaced_file(path, ".png") as tmp:  # (every picture: the old one or the new one whole)
        fig.savefig(tmp)


def epoch_starts(epochs):
    """epoch -> the row where it starts, in order, for a history's epoch column."""
    epochs = np.asarray(epochs)
    rows = np.flatnonzero(np.diff(epochs, prepend=-1))  # (where the epoch changes; the column only grows)
    return dict(zip(epochs[rows].tolist(), rows.tolist()))


def epoch_ticks(epochs, most=10):
    """{row: epochs done there} at round numbers of epochs (0, 50, 100 ...), the end included."""
    starts, done = epoch_starts(epochs), epochs[-1] + 1
    step = next(s for s in (m * 10**k for k in range(12) for m in (1, 2, 5)) if done / s <= most)  # 1, 2, 5, 10 ...
    ticks = {starts[e]: e for e in range(0, done, step) if e in starts}
    if done % step == 0:
        ticks[len(epochs)] = done
    return ticks


def real_vs_fake(real, fake, path, nrow=8):
    """Real images beside fake ones, like the DCGAN tutorial's last figure."""
    fig = Figure(figsize=(15, 7.5))
    axes = fig.subplots(1, 2)
    for ax, images, title in zip(axes, (real, fake), ("Real Images", "Fake Images")):
        grid = vutils.make_grid(to_pixels(images), nrow=nrow, padding=2)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")  # (each pixel a square: and 4x faster)
        ax.set_title(title)
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.94, wspace=0.04)  # (no tight_layout: half the time)
    save_figure(fig, path, tight=False)


def plot_shares(result, path, title):
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.bar(range(10), [100 * s for s in result["shares"]], color="tab:blue")
    ax.axhline(10, color="grey", linewidth=0.8, linestyle="--", label="10 % each (no collapse)")
    ax.set(xticks=range(10), xlabel="digit, as the reference classifier reads the samples", ylabel="% of samples",
           title=f"{title}: FD {result['FD']:.2f}, smallest share {result['smallest_share']:.1%}\n"
                 f"({result['n']} generated against {result['n_real']} real digits)")
    ax.legend(loc="upper right")
    save_figure(fig, path)


def plot_over_epochs(rows, path, score="FD", best=None):
    """The measure (FD or FID) over the epochs of a run (--eval-every), a line per generator (the
    live one, --ema's average), the best (rows[best], the one in best.pt) starred; for digits the
    smallest digit share beside it."""
    from matplotlib.ticker import MaxNLocator
    shares = "smallest_share" in rows[0]
    fig = Figure(figsize=(11 if shares else 6, 4))
    axes = fig.subplots(1, 2 if shares else 1, squeeze=False)[0]
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    for generator in dict.fromkeys(r.get("generator", "live") for r in rows):
        mine = [r for r in rows if r.get("generator", "live") == generator]
        axes[0].plot([r["epoch"] for r in mine], [r[score] for r in mine], marker="o", label=f"{generator} G")
        if shares:
            axes[1].plot([r["epoch"] for r in mine], [100 * r["smallest_share"] for r in mine], marker="o")
    if best is not None:
        axes[0].plot(rows[best]["epoch"], rows[best][score], marker="*", markersize=16, color="gold",
                     markeredgecolor="black", linestyle="none", label="kept (best.pt)")
    axes[0].set(xlabel="epoch", ylabel=f"{score} (lower is better)",
                title="Frechet distance of classifier features" if score == "FD" else "FID (Inception features)")
    axes[0].legend()
    if shares:
        axes[1].axhline(10, color="grey", linewidth=0.8, linestyle="--")
        axes[1].set(xlabel="epoch", ylabel="% of samples", title="smallest digit share (10 % = no collapse)",
                    ylim=(0, None))
    save_figure(fig, path)


def write_csv(columns, path, rows_there=0):
    """columns: name -> list of values, written as one row per index. rows_there: how many of those
    rows the file at path already holds (written by this process): only the rest are appended, so
    that a long run's history.csv costs its new rows, not all of them again. Returns the rows the
    file holds. A failed append (a full disk) is cut back off: the file holds whole rows only."""
    rows = len(next(iter(columns.values())))
    new = "".join(",".join(x if isinstance(x, str) else repr(x) for x in row) + "\n"  # (strings unquoted)
                  for row in zip(*(v[rows_there:] for v in columns.values())))
    if not rows_there:
        with replaced_file(path) as tmp, open(tmp, "w") as f:
            f.write(",".join(columns) + "\n" + new)
        return rows
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        whole = os.lseek(fd, 0, os.SEEK_END)
        try:
            data = memoryview(new.encode())
            while data:
                data = data[os.write(fd, data):]
        except BaseException:
            os.ftruncate(fd, whole)
            raise
    finally:
        os.close(fd)
    return rows


def slerp(a, b, t):
    """Spherical interpolation between noise vectors (keeps them at a typical length)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def plural(n, word, words=None):
    """'1 epoch', '2 epochs'."""
    return f"{n} {word if n == 1 else words or word + 's'}"

