"""Pictures: sample grids, the progress GIF, loss and score plots, real beside fake."""
import os

import torch
import torchvision.utils as vutils


def to_pixels(images):
    """[-1, 1] -> [0, 1]."""
    return images.detach().float().cpu().add(1).div(2).clamp(0, 1)


def save_grid(images, path, nrow=8):
    vutils.save_image(to_pixels(images), path, nrow=nrow, padding=2)


class GifFrames:
    """Frames for write_gif, each reduced to a palette once and kept, so that rewriting a GIF of a
    growing list of PNGs costs the new frames, not the whole run again."""

    def __init__(self):
        self.frames = {}

    def frame(self, png, label):
        from PIL import Image, ImageDraw
        key = (png, os.path.getmtime(png), label)
        if key not in self.frames:
            image = Image.open(png).convert("RGB")
            if label:
                draw = ImageDraw.Draw(image)
                draw.rectangle([0, 0, 6 * len(label) + 6, 13], fill=(0, 0, 0))
                draw.text((3, 1), label, fill=(255, 255, 0))
            self.frames[key] = image.quantize(colors=256, dither=Image.Dither.NONE)
        return self.frames[key]


def write_gif(pngs, path, labels=None, ms_per_frame=400, cache=None):
    """A GIF of the given PNG files, each frame labelled (e.g. with its epoch)."""
    cache = cache or GifFrames()
    frames = [cache.frame(png, labels[k] if labels else None) for k, png in enumerate(pngs)]
    durations = [ms_per_frame] * (len(frames) - 1) + [ms_per_frame * 4]  # linger on the result
    tmp = f"{path}.tmp{os.getpid()}.gif"
    frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    os.replace(tmp, path)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def smooth(values, weight=0.98):
    """Exponential moving average, as TensorBoard smooths curves."""
    out, avg = [], None
    for v in values:
        avg = v if avg is None else weight * avg + (1 - weight) * v
        out.append(avg)
    return out


def plot_curves(history, names, path, title, ylabel):
    """Raw curves (faint) and their smoothed versions over iterations, epochs marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 5))
    n = len(history["epoch"])
    every = max(1, n // 3000)  # a 1000-pixel-wide plot has no use for more points
    steps = range(0, n, every)
    for name in names:
        line, = ax.plot(steps, history[name][::every], alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth(history[name])[::every], color=line.get_color(), label=name)
    epoch_starts = [k for k in range(1, n) if history["epoch"][k] != history["epoch"][k - 1]]
    marked = len(epoch_starts) <= 60
    for k in epoch_starts if marked else []:
        ax.axvline(k, color="grey", linewidth=0.5, alpha=0.5)
    if not marked:  # too many epochs for lines: label the x axis in epochs instead
        ticks = epoch_starts[::max(1, len(epoch_starts) // 10)]
        ax.set_xticks(ticks, [str(history["epoch"][k]) for k in ticks])
    ax.set(title=title, ylabel=ylabel,
           xlabel="iterations (grey lines: epoch starts)" if marked else "epochs done")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def real_vs_fake(real, fake, path, nrow=8):
    """Real images beside fake ones, like the DCGAN tutorial's last figure."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(15, 7.5))
    for ax, images, title in zip(axes, (real, fake), ("Real Images", "Fake Images")):
        grid = vutils.make_grid(to_pixels(images), nrow=nrow, padding=2)
        ax.imshow(grid.permute(1, 2, 0).numpy())
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_csv(columns, path):
    """columns: name -> list of values, written as one row per index."""
    with open(path + ".tmp", "w") as f:
        f.write(",".join(columns) + "\n")
        for row in zip(*columns.values()):
            f.write(",".join(repr(x) for x in row) + "\n")
    os.replace(path + ".tmp", path)


def slerp(a, b, t):
    """Spherical interpolation between noise vectors (keeps them at a typical length)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b
