"""Synthetic data for the benchmarks, made one way for all of them (real CelebA and MNIST cannot
be downloaded here):

    make_faces(root, n)    n 178x218 JPEG 'faces' in <root>/img_align_celeba/ (ImageFolder's layout),
                           made on every core, about aligned CelebA's file size (its 32 real faces in
                           ../shared average 7.2 KB: these 6.6 to 7.2 KB)
    make_digits(root, n)   n 28x28 'digits' as MNIST's four files in <root>/MNIST/raw/
    PILImages(images, t)   uint8 tensors served as PIL images through a transform, as torchvision's
                           datasets serve theirs

Both keep what is already there, and write a folder whole (an interrupted run leaves none).
"""
import os
import shutil
import struct
import time

import numpy as np
import torch


def make_face(folder, k):
    """A 178x218 'face' whose JPEG is about the size of aligned CelebA's: smooth colour fields, an
    oval, some texture and noise (quality 80)."""
    from PIL import Image
    rng = np.random.default_rng(k)
    h, w = 218, 178
    base = np.asarray(Image.fromarray(rng.integers(0, 256, (7, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
    texture = (rng.normal(0, 40, (28, 23, 3)) + 128).clip(0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((w, h), Image.BICUBIC)).astype(np.float32) - 128
    yy, xx = np.mgrid[:h, :w]
    oval = ((yy - 110) / 70) ** 2 + ((xx - 89) / 55) ** 2 < 1
    pixels = base + 0.5 * texture + oval[..., None] * rng.integers(-60, 60, 3) + rng.normal(0, 3, (h, w, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(os.path.join(folder, f"{k + 1:06d}.jpg"), quality=80)


def make_faces(root, n):
    """n faces in <root>/img_align_celeba/, on every core; kept when there. Returns root."""
    images = os.path.join(root, "img_align_celeba")
    if os.path.isdir(images) and len(os.listdir(images)) >= n:
        return root
    from multiprocessing import get_context
    tmp = f"{images}.tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    started = time.monotonic()
    with get_context("fork").Pool() as pool:
        pool.starmap(make_face, [(tmp, k) for k in range(n)], chunksize=64)
    if os.path.isdir(images):  # (fewer than n: replaced whole)
        shutil.rmtree(images)
    os.replace(tmp, images)
    print(f"made {n} synthetic faces in {time.monotonic() - started:.0f} s", flush=True)
    return root


def make_digits(root, n, seed=0):
    """n 28x28 'digits' (strokes of a soft random pen) with random labels, as MNIST's training and
    test files in <root>/MNIST/raw/; kept when there. Returns root."""
    raw = os.path.join(root, "MNIST", "raw")
    if os.path.exists(os.path.join(raw, "train-images-idx3-ubyte")):
        return root
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.float32)
    yy, xx = np.mgrid[:28, :28]
    for k in range(n):
        y, x = rng.uniform(8, 20, 2)
        for _ in range(12):  # a random walk of a soft pen
            y, x = np.clip(y + rng.normal(0, 1.5), 5, 22), np.clip(x + rng.normal(0, 1.5), 5, 22)
            images[k] = np.maximum(images[k], np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.5))
    images = (images * 255).astype(np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    tmp = f"{raw}.tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    for split in ("train", "t10k"):  # the idx format: a big-endian header, then the bytes
        with open(os.path.join(tmp, f"{split}-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with open(os.path.join(tmp, f"{split}-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    os.replace(tmp, raw)
    return root


class PILImages(torch.utils.data.Dataset):
    """uint8 images (N x C x H x W) served as PIL images through a transform, as torchvision's
    datasets serve theirs."""

    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, k):
        from PIL import Image
        pixels = self.images[k].permute(1, 2, 0).numpy()
        return self.transform(Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)), 0
