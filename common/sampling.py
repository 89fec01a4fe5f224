"""--generate N [--interpolate]: images from a trained generator, in batches, so that memory stays
bounded whatever N is (FID is usually computed on 50,000 samples).

    generate(script, args, build_generator, device)   # the run in --outdir; trains nothing
    samples(netG, noise_shape, image_shape, n, seed)  # n samples, batch by batch, for a measure
"""
import copy
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
import torchvision.utils as vutils

from . import pictures
from .checkpoints import load_generator
from .device import bare
from .outdir import claim, replaced_folder
from .signals import signals_held

BATCH = 500  # images per generator forward: memory does not grow with N
GRID_MAX = 256  # grid.png shows at most this many images, whatever N is


def noise_batches(n, noise_shape, seed, device):
    """The noise for N images, BATCH at a time, from one generator seeded with `seed`: image k gets
    the same noise whatever N is."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n, BATCH):
        k = min(BATCH, n - start)
        yield start, torch.randn(k, *noise_shape, generator=gen).to(device)


def samples(netG, noise_shape, image_shape, n, seed):
    """n samples of netG, BATCH at a time, in the shape of the training images. They come from a
    copy of netG, in training mode as the scripts draw them, with the noise --generate draws: the
    run's generator, its BatchNorm statistics and every RNG are left untouched."""
    g = copy.deepcopy(bare(netG))
    with torch.no_grad():
        for _, z in noise_batches(n, noise_shape, seed, next(g.parameters()).device):
            yield g(z).reshape(-1, *image_shape)


def generate(script, args, build_generator, device):
    """--generate N [--interpolate] from the run in --outdir: build_generator(settings) is the script's
    generator for the run's settings. Writes into <outdir>/generated/, which holds this command's
    images only (what an earlier --generate wrote there is deleted first)."""
    with claim(args.outdir):
        netG, ckpt, which = load_generator(args.outdir, script, build_generator, device, args.math_defaults,
                                           args.generator)
        print(f"Sampling {which}")
        noise_shape, image_shape = ckpt["fixed_noise"].shape[1:], tuple(ckpt["image_shape"])
        folder = os.path.join(args.outdir, "generated")
        with replaced_folder(folder) as tmp:
            write_images(netG, noise_shape, image_shape, args.generate, args.seed, tmp)
            if args.interpolate:
                write_interpolation(netG, noise_shape, image_shape, args.seed, tmp)
        print(f"Wrote {args.generate} images to {folder}/images/, grid.png (the first {min(args.generate, GRID_MAX)})"
              + (", interpolation.png and interpolation.gif" if args.interpolate else "") + f" to {folder}/")


def write_images(netG, noise_shape, image_shape, n, seed, folder):
    """Write N single PNG images into folder/images/ (00000.png ..., nothing else, so that an FID tool
    can read the folder; grayscale for one channel) and grid.png into folder."""
    from tqdm import tqdm
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    device = next(netG.parameters()).device
    grid = []
    bar = tqdm(total=n, unit="img", desc="generating", leave=False, disable=not sys.stderr.isatty())
    # PNG compression releases the GIL: a few threads write while the generator computes.
    writers, pending = ThreadPoolExecutor(max_workers=4), []
    try:
        with torch.no_grad():
            for start, z in noise_batches(n, noise_shape, seed, device):
                images = netG(z).reshape(-1, *image_shape).cpu()
                if start < GRID_MAX:
                    grid.append(images[:GRID_MAX - start])
                pending.append(writers.submit(save_pngs, images, os.path.join(folder, "images"), start))
                if len(pending) > 4:  # at most a few batches in memory: wait for the oldest
                    pending.pop(0).result()
                bar.update(len(images))
        for f in pending:
            f.result()
    finally:  # (on a Ctrl-C too, held until it is done: no writer may go on into a folder being removed)
        with signals_held():
            writers.shutdown(wait=True, cancel_futures=True)
    bar.close()
    shown = torch.cat(grid)[:GRID_MAX]
    pictures.save_grid(shown, os.path.join(folder, "grid.png"), nrow=int(math.ceil(math.sqrt(len(shown)))))


def save_pngs(images, folder, start):
    for k, image in enumerate(images):
        pictures.save_png(pictures.to_uint8(image), os.path.join(folder, f"{start + k:05d}.png"))


def write_interpolation(netG, noise_shape, image_shape, seed, folder, rows=8, steps=10):
    """8 legs of 10 steps between random points of the latent space, as a grid and as one GIF."""
    device = next(netG.parameters()).device
    nz = math.prod(noise_shape)
    gen = torch.Generator().manual_seed(seed + 1)
    ends = torch.randn(rows + 1, nz, generator=gen)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    z = pictures.slerp(ends[:-1].unsqueeze(1), ends[1:].unsqueeze(1), t)  # rows x steps x nz
    with torch.no_grad():
        walk = netG(z.reshape(rows * steps, *noise_shape).to(device)).reshape(-1, *image_shape)
    pictures.save_grid(walk, os.path.join(folder, "interpolation.png"), nrow=steps)
    frames = []
    for k, image in enumerate(walk):  # one continuous walk: row after row
        if k >= steps and k % steps == 0:
            continue  # a row starts where the row before it ended
        png = os.path.join(folder, f".walk{k:03d}.png")
        vutils.save_image(pictures.to_pixels(image), png)
        frames.append(png)
    gif_frames = pictures.GifFrames(pictures.palette_of(walk, nrow=steps))
    pictures.write_gif(frames, os.path.join(folder, "interpolation.gif"), gif_frames, ms_per_frame=120)
    for png in frames:
        os.remove(png)
