"""Issue: common can be changed without reading all of it: no import circle, a run record that
refuses what it cannot record, the GIF through imageio with each frame reduced once."""
import ast
import glob
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

import common
from common import pictures
from common.history import History
from conftest import ROOT, call, data_args, load


def test_common_has_no_import_circle():
    graph = {}
    for path in glob.glob(os.path.join(ROOT, "common", "*.py")):
        name = os.path.basename(path)[:-3]
        imports = set()
        for node in ast.walk(ast.parse(open(path).read())):  # every import, also one inside a function
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imports |= {node.module} if node.module else {a.name for a in node.names}
        graph[name] = imports
    done, path = set(), []

    def visit(module):
        assert module not in path, "import circle: " + " -> ".join(path + [module])
        if module in done:
            return
        path.append(module)
        for other in graph.get(module, ()):
            visit(other)
        path.pop()
        done.add(module)
    for module in graph:
        visit(module)
    assert "run" not in graph["errors"] and "run" not in graph["checkpoints"]


def test_step_refuses_a_wrong_number_of_values_naming_the_names():
    history = History(["loss_d", "loss_g", "D_x"])
    with pytest.raises(TypeError, match=r"got 2 numbers.*records 3: loss_d, loss_g, D_x"):
        history.add(0, 0, (torch.tensor(1.0), torch.tensor(2.0)))
    with pytest.raises(TypeError, match=r"got 4 numbers"):
        history.add(0, 0, tuple(torch.tensor(1.0) for _ in range(4)))
    history.add(0, 0, (torch.tensor(1.0), torch.tensor(2.0), torch.tensor(0.5)))
    assert history.flush() is None and history.columns["D_x"] == [0.5]


def test_the_run_records_how_many_gpus_split_each_batch_not_the_ngpu_flag(runs, celeba_root, mnist_root, tmp_path):
    ckpt = load(runs["dcgan_celeba"]["a"])
    assert ckpt["settings"]["data_parallel_gpus"] == 1 and ckpt["settings"]["processes"] == 1
    assert "ngpu" not in ckpt["settings"]
    gpus = max(1, torch.cuda.device_count())  # (on a CPU DataParallel splits nothing: 1)
    assert common.device.data_parallel_gpus(nn.DataParallel(nn.Linear(2, 2))) == gpus
    # --ngpu 3 on this machine computes the same: a resume may give it
    args = data_args("dcgan_celeba", mnist_root, celeba_root) + ["--outdir", tmp_path]
    assert call("dcgan_celeba", *args, "--epochs", 1) == 0
    assert call("dcgan_celeba", *args, "--epochs", 2, "--resume", "--ngpu", 3) == 0


def grid_png(path, seed):
    g = torch.Generator().manual_seed(seed)
    pictures.save_grid(torch.rand(16, 3, 12, 12, generator=g) * 2 - 1, path, nrow=4)


def test_the_gif_holds_each_frame_as_reduced_once_with_its_label(tmp_path, monkeypatch):
    from PIL import Image
    import imageio.v3 as iio
    real = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(9)) * 2 - 1
    frames = pictures.GifFrames(pictures.palette_of(real, nrow=4))
    pngs = [str(tmp_path / f"{k}.png") for k in range(3)]
    for k, png in enumerate(pngs):
        grid_png(png, k)
    reduced = []
    real_quantize = Image.Image.quantize
    monkeypatch.setattr(Image.Image, "quantize", lambda self, *a, **k: reduced.append(1) or real_quantize(self, *a, **k))
    for n in (2, 3):  # the GIF of a growing run, written twice
        pictures.write_gif(pngs[:n], str(tmp_path / "p.gif"), frames, [f"epoch {k}" for k in range(n)])
    assert len(reduced) == 3  # each frame once, not once per writing
    palette = np.frombuffer(frames.palette, np.uint8).reshape(-1, 3)
    shown = iio.imread(tmp_path / "p.gif", index=None)[..., :3]
    assert len(shown) == 3
    for k, png in enumerate(pngs):  # the colours written are the palette's colours of each reduced frame
        assert np.array_equal(shown[k], palette[frames.frame(png, f"epoch {k}")])
    assert (shown[0][1:13, 3:30] == (255, 255, 0)).all(-1).any()  # the label, in yellow


def test_pngs_written_by_generate_are_grayscale_for_digits(runs):
    from PIL import Image
    outdir = runs["dcgan_mnist"]["b"]
    assert call("dcgan_mnist", "--outdir", outdir, "--generate", 2) == 0
    assert Image.open(os.path.join(outdir, "generated", "images", "00000.png")).mode == "L"


def test_a_learners_random_flip_trains_as_written_and_repeats(tmp_path, celeba_root, mnist_root, monkeypatch,
                                                              capsys):
    """The tutorial's Compose with transforms.RandomHorizontalFlip() added, as a learner would: the
    run trains through it (a notice says why it is slower), two runs give the same bits, and a
    resumed run ends where a straight one does."""
    celeba = __import__("dcgan_celeba")
    image_folder = celeba.dset.ImageFolder

    def with_flip(root, transform):  # Resize, CenterCrop, RandomHorizontalFlip, ToTensor, Normalize
        transform.transforms.insert(2, celeba.transforms.RandomHorizontalFlip())
        return image_folder(root=root, transform=transform)
    monkeypatch.setattr(celeba.dset, "ImageFolder", with_flip)
    args = data_args("dcgan_celeba", mnist_root, celeba_root) + ["--checkpoint-every", 2]
    for name in ("a", "b"):
        assert call("dcgan_celeba", *args, "--epochs", 2, "--outdir", tmp_path / name) == 0
    assert "(Resize, CenterCrop, RandomHorizontalFlip, ToTensor, Normalize) has steps that cannot be done once" \
        in capsys.readouterr().out
    from faults import faulty_iter  # (a real Ctrl-C as the second epoch begins: the same command resumed)
    with monkeypatch.context() as stopped:
        stopped.setattr(common.DataLoader, "__iter__", faulty_iter(signal_at="1:0/SIGINT"))
        assert call("dcgan_celeba", *args, "--epochs", 2, "--outdir", tmp_path / "c") == 130
    assert call("dcgan_celeba", *args, "--epochs", 2, "--outdir", tmp_path / "c", "--resume") == 0
    from conftest import assert_same
    assert_same(load(tmp_path / "a"), load(tmp_path / "b"))
    assert_same(load(tmp_path / "a"), load(tmp_path / "c"))
