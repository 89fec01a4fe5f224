"""progress.gif, written two ways side by side on the same frames: what a growing run costs.

  pillow, own palettes   the previous way: each frame reduced once to its own 256 colours (kept),
                         the GIF written by Pillow directly
  imageio, one palette   this project's way (common.pictures): each frame reduced once to one
                         palette (the real images' colours), the GIF written by imageio

The frames are sample grids as the scripts draw them: 8x8 faces of 64x64 (real CelebA faces from
--faces, noise added per frame, as a generator's output varies) or 10x10 MNIST digits.

    python benchmarks/gif_write.py --faces ../shared/data/celeba-32 --mnist ../shared/data/mnist-10k
"""
import argparse
import glob
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import pictures  # noqa: E402


def face_images(folder, n=64):
    files = sorted(glob.glob(os.path.join(folder, "*", "*.jpg")))
    faces = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((64, 78)).crop((0, 7, 64, 71))).copy())
             for f in files]
    return torch.stack([faces[k % len(faces)] for k in range(n)]).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def digit_images(root, n=100):
    with open(os.path.join(root, "MNIST", "raw", "train-images-idx3-ubyte"), "rb") as f:
        data = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 1, 28, 28)
    return torch.from_numpy(data[:n].copy()).float().div(127.5).sub(1)


def pillow_own_palettes(pngs, path, cache):
    frames = []
    for k, png in enumerate(pngs):
        if png not in cache:
            cache[png] = Image.open(png).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
        frames.append(cache[png])
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=400, loop=0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", required=True, help="an ImageFolder of faces (e.g. ../shared/data/celeba-32)")
    p.add_argument("--mnist", required=True, help="an MNIST root (holds MNIST/raw/)")
    p.add_argument("--frames", type=int, default=100, help="frames in the GIF at the end")
    args = p.parse_args()
    print("| grid | way | reduce each new frame (once) | write the GIF, per frame in it | whole GIF at the end |")
    print("|---|---|---|---|---|")
    for name, real, nrow in [("8x8 faces (530x530)", face_images(args.faces), 8),
                             ("10x10 digits (302x302)", digit_images(args.mnist), 10)]:
        with tempfile.TemporaryDirectory() as tmp:
            gen = torch.Generator().manual_seed(0)
            pngs = []
            for k in range(args.frames):
                noisy = (real + torch.randn(real.shape, generator=gen) * (1 - k / args.frames)).clamp(-1, 1)
                pngs.append(os.path.join(tmp, f"epoch_{k:04d}.png"))
                pictures.save_grid(noisy, pngs[-1], nrow)
            frames = pictures.GifFrames(pictures.palette_of(real, nrow))
            ways = {"pillow, own palettes": (lambda ps, path, cache={}: pillow_own_palettes(ps, path, cache)),
                    "imageio, one palette": (lambda ps, path: pictures.write_gif(ps, path, frames))}
            for way, write in ways.items():
                t0 = time.perf_counter()
                write(pngs, os.path.join(tmp, "first.gif"))  # every frame reduced (once), and written
                first = time.perf_counter() - t0
                times = []
                for _ in range(3):  # written again: the reduced frames are kept
                    t0 = time.perf_counter()
                    write(pngs, os.path.join(tmp, "again.gif"))
                    times.append(time.perf_counter() - t0)
                again = statistics.median(times)
                print(f"| {name} | {way} | {(first - again) / len(pngs) * 1000:.1f} ms | "
                      f"{again / len(pngs) * 1000:.1f} ms | {again:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
