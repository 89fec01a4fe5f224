"""Tiny datasets built in temp folders, and helpers that run the scripts in-process or as
subprocesses. Nothing here downloads anything."""
import importlib
import os
import signal
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "benchmarks")]
import common  # noqa: E402
from processes import Child  # noqa: E402
from synthetic import PILImages  # noqa: E402,F401 (for the tests)

SCRIPTS = ["dcgan_celeba", "gan_mnist", "dcgan_mnist"]


def write_idx_images(path, images):
    with open(path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28))
        f.write(images.astype(np.uint8).tobytes())


def write_idx_labels(path, labels):
    with open(path, "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)))
        f.write(labels.astype(np.uint8).tobytes())


def make_mnist(root, n=40, seed=0):
    """<root>/MNIST/raw/ with the four idx files torchvision reads: n blurry random 'digits'."""
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for k in range(n):  # a bright blob somewhere, so that images differ in structure
        y, x = rng.integers(6, 22, size=2)
        yy, xx = np.mgrid[:28, :28]
        images[k] = np.clip(255 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 20), 0, 255)
    labels = rng.integers(0, 10, size=n)
    for split in ("train", "t10k"):
        write_idx_images(os.path.join(raw, f"{split}-images-idx3-ubyte"), images)
        write_idx_labels(os.path.join(raw, f"{split}-labels-idx1-ubyte"), labels)
    return root


def make_faces(folder, n=24, seed=0, size=(178, 218), modes=None):
    """n small JPEG 'faces' (178x218 like aligned CelebA) in folder."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        base = rng.integers(0, 256, size=3)
        yy, xx = np.mgrid[:size[1], :size[0]]
        pixels = (base + 60 * np.sin(xx[..., None] / (7 + k) + yy[..., None] / 11)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
        mode = (modes or {}).get(k)
        if mode:
            image = image.convert(mode)
        ext = "png" if mode == "RGBA" else "jpg"
        image.save(os.path.join(folder, f"{k + 1:06d}.{ext}"))
    return folder


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    return make_mnist(str(tmp_path_factory.mktemp("mnist")))


@pytest.fixture(scope="session")
def celeba_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("celeba"))
    make_faces(os.path.join(root, "img_align_celeba"))
    return root


def data_args(script, mnist_root, celeba_root):
    """Small, quick settings: 3 batches per epoch (the last one smaller), tiny nets for CelebA."""
    if script == "dcgan_celeba":
        return ["--dataroot", celeba_root, "--batch-size", "10", "--ngf", "8", "--ndf", "8", "--workers", "0"]
    return ["--dataroot", mnist_root, "--batch-size", "16"]


def call(script, *argv):
    """Run script.main(argv) in this process, as `python script.py argv` would; return the exit code."""
    module = importlib.import_module(script)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        common.run_script(lambda: module.main([str(a) for a in argv]))
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    finally:  # every way out of a run gives the signals back
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def spawn(script, *argv, env=None, faults=(), cwd=ROOT, limit=None, group=False):
    """`python script.py argv` as a process of its own, started warm (benchmarks/processes.py).
    faults: e.g. ("--signal-at", "1:1/SIGINT"), which tests/faults.py causes in it; limit: the
    largest file it may write, in bytes (ulimit -f); group: in a process group of its own."""
    if faults:
        return Child("tests/faults.py", [*faults, f"{script}.py", *argv], env=env, cwd=cwd, limit=limit, group=group)
    return Child(f"{script}.py", argv, env=env, cwd=cwd, limit=limit, group=group)


def spawn_code(code):
    """`python -c code`, started warm (the code is written to a file of its own)."""
    import tempfile
    path = os.path.join(tempfile.mkdtemp(), "child.py")
    with open(path, "w") as f:
        f.write(code)
    return Child(path)


def run_sub(script, *argv, env=None, limit=None, timeout=240):
    """(exit code, stdout, stderr) of `python script.py argv`, started warm."""
    p = spawn(script, *argv, env=env, limit=limit)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def cold(script, *argv, env=None):
    """`python script.py argv` started as a fresh interpreter: for what happens while torch loads."""
    return subprocess.Popen([sys.executable, os.path.join(ROOT, f"{script}.py")] + [str(a) for a in argv], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def load(outdir):
    return torch.load(os.path.join(outdir, "checkpoint.pt"), weights_only=True)


def assert_same(a, b, path="checkpoint"):
    """Every tensor, number and string equal, bit for bit."""
    assert type(a) is type(b), path
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{k}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def tensors_in(obj):
    """Every tensor in a loaded file (nested dicts, lists and tuples)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else []
    return [t for v in values for t in tensors_in(v)]


def same_files(dir_a, dir_b, name):
    with open(os.path.join(dir_a, name), "rb") as fa, open(os.path.join(dir_b, name), "rb") as fb:
        return fa.read() == fb.read()


@pytest.fixture(scope="session")
def runs(tmp_path_factory, mnist_root, celeba_root):
    """Per script: two identical 2-epoch runs (a, b), and a 1-epoch run resumed to 2 (c)."""
    out = {}
    for script in SCRIPTS:
        base = tmp_path_factory.mktemp(script)
        args = data_args(script, mnist_root, celeba_root) + ["--checkpoint-every", "2"]
        dirs = {k: str(base / k) for k in ("a", "b", "c")}
        assert call(script, *args, "--epochs", 2, "--outdir", dirs["a"]) == 0
        assert call(script, *args, "--epochs", 2, "--outdir", dirs["b"]) == 0
        assert call(script, *args, "--epochs", 1, "--outdir", dirs["c"]) == 0
        assert call(script, *args, "--epochs", 2, "--outdir", dirs["c"], "--resume") == 0
        out[script] = dirs
    return out
