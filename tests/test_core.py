"""Issue: the three scripts end to end, their networks, init, determinism, resume and generate."""
import csv
import importlib
import os

import pytest
import torch
import torchvision.transforms as T
from PIL import Image

import common
from conftest import SCRIPTS, PILImages, assert_same, call, data_args, load, same_files

BATCHES = {"dcgan_celeba": 3, "gan_mnist": 3, "dcgan_mnist": 3}  # 24 faces / 10, 40 digits / 16
SIZE = {"dcgan_celeba": (64, 3), "gan_mnist": (28, 1), "dcgan_mnist": (28, 1)}
NROW = {"dcgan_celeba": 8, "gan_mnist": 10, "dcgan_mnist": 10}
EXTRA = {"dcgan_celeba": ["training_images.png", "real_vs_fake.png", "scores.png"],
         "gan_mnist": ["real_images.png", "real_vs_fake.png", "scores.png"],
         "dcgan_mnist": ["real_images.png", "real_vs_fake.png"]}


@pytest.mark.parametrize("script", SCRIPTS)
def test_outputs_exist_and_are_well_formed(runs, script):
    outdir = runs[script]["a"]
    size, channels = SIZE[script]
    for epoch in range(3):  # epoch 0 (before training), 1, 2
        grid = Image.open(os.path.join(outdir, "samples", f"epoch_{epoch:04d}.png"))
        n, nrow = (64 if script == "dcgan_celeba" else 100), NROW[script]
        rows = -(-n // nrow)
        assert grid.size == (nrow * (size + 2) + 2, rows * (size + 2) + 2)
    gif = Image.open(os.path.join(outdir, "progress.gif"))
    if script == "dcgan_celeba":  # the tutorial's frames: every 500 iterations (the first) and the last (the 6th)
        assert sorted(os.listdir(os.path.join(outdir, "frames"))) == ["iteration_000000.png", "iteration_000005.png"]
        assert gif.n_frames == 2
    else:
        assert gif.n_frames == 3  # epochs + 1: the sample grids
    assert gif.info["duration"] >= 100  # readable, not a blur
    with open(os.path.join(outdir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * BATCHES[script]
    assert {"epoch", "iteration", "loss_d", "loss_g"} <= set(rows[0])
    if script != "dcgan_mnist":
        assert "D_x" in rows[0]
    assert [int(r["epoch"]) for r in rows] == [0, 0, 0, 1, 1, 1]
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2, 0, 1, 2]
    assert all(float(r["loss_d"]) > 0 and float(r["loss_g"]) > 0 for r in rows)
    for name in ["losses.png"] + EXTRA[script]:
        assert Image.open(os.path.join(outdir, name)).size[0] > 100, name
    ckpt = load(outdir)
    assert ckpt["epoch"] == 2 and ckpt["iteration"] == 0
    assert {"netG", "netD", "optimizerG", "optimizerD", "fixed_noise", "history", "rng", "settings"} <= set(ckpt)
    assert len(ckpt["history"]["loss_d"]) == 2 * BATCHES[script]


@pytest.mark.parametrize("script", SCRIPTS)
def test_same_command_gives_the_same_bits(runs, script):
    a, b = runs[script]["a"], runs[script]["b"]
    assert_same(load(a), load(b))
    assert same_files(a, b, "history.csv")
    assert same_files(a, b, os.path.join("samples", "epoch_0002.png"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_one_epoch_plus_resume_equals_two_epochs(runs, script):
    a, c = runs[script]["a"], runs[script]["c"]
    straight, resumed = load(a), load(c)
    if script == "dcgan_celeba":
        # The tutorial keeps a frame at its run's last iteration, and the 1-epoch run had one more (at
        # iteration 2): G's forward in training mode moved its BatchNorm running statistics once more,
        # which nothing samples with. Everything else is the same bits.
        assert [f for f, _ in resumed.pop("frames")] == [f for f, _ in straight.pop("frames")][:1] + [
            "frames/iteration_000002.png", "frames/iteration_000005.png"]
        for key in [k for k in straight["netG"] if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]:
            before, after = straight["netG"].pop(key), resumed["netG"].pop(key)
            assert not key.endswith("num_batches_tracked") or after - before == 1  # (one forward more)
    assert_same(straight, resumed)
    assert same_files(a, c, "history.csv")
    for epoch in range(3):
        assert same_files(a, c, os.path.join("samples", f"epoch_{epoch:04d}.png"))
    # the GIF covers the whole run (dcgan_celeba's: iterations 0, 2, the last of the 1-epoch run, and 5)
    assert Image.open(os.path.join(c, "progress.gif")).n_frames == 3


@pytest.mark.parametrize("script", SCRIPTS)
def test_generate_writes_n_images_at_the_data_resolution(runs, script):
    outdir = runs[script]["a"]
    assert call(script, "--outdir", outdir, "--generate", 5, "--interpolate") == 0
    folder = os.path.join(outdir, "generated", "images")
    files = sorted(os.listdir(folder))  # nothing but the samples, as an FID tool reads the folder
    assert files == [f"{k:05d}.png" for k in range(5)]
    size, channels = SIZE[script]
    for f in files:
        image = Image.open(os.path.join(folder, f))
        assert image.size == (size, size)
        assert len(image.getbands()) in ((1, 3) if channels == 1 else (3,))
    assert os.path.exists(os.path.join(outdir, "generated", "grid.png"))
    # 8 legs of 10 steps, joined: 73 frames of 120 ms, the last held 4x (GIF writers merge equal neighbours)
    gif = Image.open(os.path.join(outdir, "generated", "interpolation.gif"))
    durations = []
    for k in range(gif.n_frames):
        gif.seek(k)
        durations.append(gif.info["duration"])
    assert sum(durations) == (8 * 9) * 120 + 4 * 120
    # --seed chooses the noise: the same seed gives the same image, another seed another one
    first = open(os.path.join(folder, files[0]), "rb").read()
    assert call(script, "--outdir", outdir, "--generate", 1, "--seed", 7) == 0
    assert open(os.path.join(folder, "00000.png"), "rb").read() != first


def test_network_shapes_at_the_tutorials_sizes():
    celeba, gan, dcgan = (importlib.import_module(s) for s in SCRIPTS)
    netG, netD = celeba.Generator(1), celeba.Discriminator(1)
    assert netG(torch.randn(2, 100, 1, 1)).shape == (2, 3, 64, 64)
    assert netD(torch.randn(2, 3, 64, 64)).shape == (2, 1, 1, 1)
    G, D = gan.make_generator(), gan.make_discriminator()
    assert G(torch.randn(3, 64)).shape == (3, 784)
    assert D(torch.randn(3, 784)).shape == (3, 1)
    assert [m.out_features for m in G if isinstance(m, torch.nn.Linear)] == [256, 256, 784]
    gen, disc = dcgan.Generator(64), dcgan.Discriminator()
    x = torch.randn(4, 64).view(4, 64, 1, 1)
    sizes = []
    for block in gen.gen:
        x = block(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(256, 3, 3), (128, 6, 6), (64, 13, 13), (1, 28, 28)]
    assert disc(torch.randn(4, 1, 28, 28)).shape == (4, 1)


def test_init_statistics():
    celeba, _, dcgan = (importlib.import_module(s) for s in SCRIPTS)
    torch.manual_seed(0)
    netG = celeba.Generator(1).apply(common.weights_init)
    conv = netG.main[3].weight
    assert abs(conv.mean().item()) < 1e-3 and abs(conv.std().item() - 0.02) < 1e-3
    bn = netG.main[1]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and abs(bn.weight.std().item() - 0.02) < 0.005
    assert torch.all(bn.bias == 0)
    gen = dcgan.Generator(64).apply(dcgan.weights_init)
    bn = gen.gen[0][1]
    assert abs(bn.weight.mean().item()) < 0.01 and abs(bn.weight.std().item() - 0.02) < 0.005
    assert torch.all(bn.bias == 0)
    assert abs(gen.gen[1][0].weight.std().item() - 0.02) < 1e-3


def test_batches_equal_totensor_normalize_bit_for_bit():
    images = torch.randint(0, 256, (16, 3, 9, 7), dtype=torch.uint8)
    tutorial = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
    expected = torch.stack([tutorial(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])
    loader = common.DataLoader(PILImages(images, tutorial), batch_size=16, shuffle=False, device=torch.device("cpu"),
                               seed=0)
    batch, _ = next(iter(loader))
    assert torch.equal(batch, expected)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_transform_with_random_steps_is_applied_as_written_and_repeats(workers, capsys):
    """A learner's first change, RandomHorizontalFlip, cannot be cached: DataLoader reads each image
    through the dataset's own transform every epoch (a notice says why it is slower), each image's
    flip drawn from (seed, epoch, image): the same in any worker, in any order, after any resume,
    and the training's own random generator is left alone."""
    images = torch.randint(0, 256, (12, 3, 5, 6), dtype=torch.uint8)
    flip = T.Compose([T.RandomHorizontalFlip(), T.ToTensor()])
    loader = common.DataLoader(PILImages(images, flip), batch_size=4, num_workers=workers,
                               device=torch.device("cpu"), seed=3)
    assert "cannot be done once and kept" in capsys.readouterr().out

    def epoch(e, start=0):
        loader.set_epoch(e, start)
        return [x for x, _ in loader]
    torch.manual_seed(0)
    first = epoch(0)
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())  # not drawn from
    flipped = [torch.equal(x, T.ToTensor()(Image.fromarray(images[k].permute(1, 2, 0).numpy())).flip(-1))
               for k, x in zip(loader.order(0).tolist(), torch.cat(first))]
    assert any(flipped) and not all(flipped)  # some flipped, some not
    assert all(torch.equal(a, b) for a, b in zip(epoch(0), first))  # the same draws again
    assert all(torch.equal(a, b) for a, b in zip(epoch(0, start=2), first[2:]))  # a resumed epoch: the same
    assert not all(torch.equal(a, b) for a, b in zip(epoch(1), first))  # another epoch: new draws


@pytest.mark.parametrize("transform", [
    T.Compose([T.Resize(8), T.CenterCrop(8)]),  # no ToTensor: PIL images cannot be batched
    T.CenterCrop(4),
])
def test_a_transform_that_makes_no_tensors_is_refused(transform):
    images = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8)
    with pytest.raises(common.UserError, match="does not make tensors.*ToTensor"):
        common.DataLoader(PILImages(images, transform), batch_size=2, device=torch.device("cpu"), seed=0)


def test_epoch_order_comes_from_seed_and_epoch_and_a_resumed_epoch_starts_at_its_batch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    loader = common.DataLoader(PILImages(images, T.ToTensor()), batch_size=3, device=torch.device("cpu"), seed=5)
    assert len(loader) == 4

    def epoch(e, start=0):
        loader.set_epoch(e, start)
        return [(x[:, 0, 0, 0] * 255).round().long().tolist() for x, _ in loader]
    first, second = epoch(0), epoch(1)
    assert sorted(sum(first, [])) == list(range(10)) and first != second  # each epoch a new shuffle
    assert epoch(0) == first  # the same one again: nothing stored
    assert epoch(1, start=2) == second[2:]


def test_image_cache_equals_the_tutorials_imagefolder_transform(celeba_root, tmp_path):
    import hashlib
    import torchvision.datasets as dset
    tutorial = dset.ImageFolder(celeba_root, transform=T.Compose([
        T.Resize(64), T.CenterCrop(64), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]))
    cpu = torch.device("cpu")
    loader = common.DataLoader(tutorial, batch_size=100, shuffle=False, device=cpu, seed=0, cache_dirs=[str(tmp_path)])
    batch, labels = next(iter(loader))
    expected = torch.stack([tutorial[k][0] for k in range(len(tutorial))])
    assert torch.equal(batch, expected) and labels.tolist() == tutorial.targets
    # keyed as earlier versions keyed it, so that their cache files are used
    files = [os.path.relpath(p, celeba_root) for p, _ in tutorial.samples]
    key = hashlib.sha256(("v1\n64\n" + "\n".join(
        f"{f}\t{os.stat(os.path.join(celeba_root, f)).st_size}\t{os.stat(os.path.join(celeba_root, f)).st_mtime_ns}"
        for f in files)).encode()).hexdigest()[:16]
    assert os.listdir(tmp_path) == [f"image_cache_64px_{key}.pt"]
    # a second loader reuses the cache file
    again = common.DataLoader(tutorial, batch_size=100, shuffle=False, device=cpu, seed=0, cache_dirs=[str(tmp_path)])
    assert torch.equal(next(iter(again))[0], batch)


@pytest.mark.parametrize("script", ["dcgan_celeba", "dcgan_mnist"])
def test_stream_with_workers_gives_the_same_bits_as_memory(runs, script, tmp_path, mnist_root, celeba_root):
    args = data_args(script, mnist_root, celeba_root) + ["--checkpoint-every", "2", "--epochs", "2"]
    assert call(script, *args, "--stream", "--workers", "2", "--outdir", tmp_path) == 0  # last --workers wins
    assert_same(load(runs[script]["a"]), load(str(tmp_path)))


@pytest.mark.parametrize("script", SCRIPTS)
def test_clear_error_for_a_missing_dataroot(script, tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    code = call(script, "--dataroot", missing, "--outdir", tmp_path / "out", "--epochs", 1)
    err = capsys.readouterr().err
    assert code == 1
    assert str(missing) in err and "Traceback" not in err
    assert ("img_align_celeba" in err) if script == "dcgan_celeba" else (os.path.join("MNIST", "raw") in err)


def test_clear_error_for_the_flat_folder_trap(tmp_path, capsys):
    from conftest import make_faces
    make_faces(str(tmp_path / "faces"), n=3)
    code = call("dcgan_celeba", "--dataroot", tmp_path / "faces", "--outdir", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 1
    assert "holds 3 images directly" in err and "img_align_celeba" in err and "Traceback" not in err
