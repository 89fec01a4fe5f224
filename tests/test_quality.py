"""Issue: sample quality, measured: the Frechet distance of a reference classifier's features,
digit shares, --evaluate, --eval-every (which must leave the training untouched), and the real
side of an FID for CelebA."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from common import quality
from conftest import assert_same, call, data_args, load, make_mnist


def test_fd_of_two_gaussians_matches_the_closed_form():
    """For diagonal covariances, FD = |mu1 - mu2|^2 + sum((sigma1 - sigma2)^2) over the axes."""
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.0])
    var1, var2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 0.25])
    expected = (mu1 - mu2).square().sum() + (var1.sqrt() - var2.sqrt()).square().sum()  # 5 + 1 + 1 + 0
    assert quality.frechet_distance(mu1, torch.diag(var1), mu2, torch.diag(var2)) == pytest.approx(expected.item())
    assert quality.frechet_distance(mu1, torch.diag(var1), mu1, torch.diag(var1)) == pytest.approx(0, abs=1e-9)


def test_fd_matches_an_independent_computation_with_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")  # installed by .ci/run and README's test command
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 20)), rng.normal(size=(20, 20))
    s1, s2 = a @ a.T + 0.1 * np.eye(20), b @ b.T + 0.1 * np.eye(20)  # covariances that do not commute
    m1, m2 = rng.normal(size=20), rng.normal(size=20)
    root = scipy_linalg.sqrtm(s1 @ s2).real
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root)
    got = quality.frechet_distance(*(torch.from_numpy(x) for x in (m1, s1, m2, s2)))
    assert got == pytest.approx(expected, rel=1e-6)


def test_fd_of_samples_from_two_gaussians_approaches_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 2, generator=gen) * torch.tensor([1.0, 2.0])
    y = torch.randn(200_000, 2, generator=gen) * torch.tensor([3.0, 2.0]) + torch.tensor([1.0, 0.0])
    assert quality.frechet_distance(*quality.moments(x), *quality.moments(y)) == pytest.approx(1 + 4, rel=0.02)


def test_the_classifier_is_trained_once_and_retrained_for_other_digits(tmp_path, capsys, monkeypatch):
    root = make_mnist(str(tmp_path / "a"), n=60)
    from torchvision.datasets import MNIST
    data = MNIST(root, train=True)
    images, labels = data.data.unsqueeze(1), data.targets
    net = quality.classifier(images, labels, [str(tmp_path / "cache")], torch.device("cpu"))  # no such folder
    assert "Trained the reference digit classifier" in capsys.readouterr().out
    (tmp_path / "cache").mkdir()
    net = quality.classifier(images, labels, [str(tmp_path / "cache")], torch.device("cpu"))
    saved = os.listdir(tmp_path / "cache")
    assert len(saved) == 1 and saved[0].startswith("digit_classifier_")
    assert set(torch.load(tmp_path / "cache" / saved[0], weights_only=True)) == {"weights", "accuracy"}

    def no_training(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(quality, "train_classifier", no_training)
    again = quality.classifier(images, labels, [str(tmp_path / "cache")], torch.device("cpu"))
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(again(x), net(x))  # loaded, the same weights
    changed = images.clone()
    changed[0, 0, 0, 0] ^= 1
    with pytest.raises(AssertionError, match="trained again"):
        quality.classifier(changed, labels, [str(tmp_path / "cache")], torch.device("cpu"))


def test_training_or_loading_the_classifier_leaves_the_global_rng_alone(tmp_path):
    images, labels = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (50,))
    for path in ("trained", "loaded"):
        torch.manual_seed(3)
        quality.classifier(images, labels, [str(tmp_path)], torch.device("cpu"))
        assert torch.equal(torch.get_rng_state(), torch.manual_seed(3).get_state()), path
    assert len(os.listdir(tmp_path)) == 1


@pytest.mark.parametrize("script", ["gan_mnist", "dcgan_mnist"])
def test_evaluate_prints_fd_and_the_shares_and_writes_its_files(runs, script, mnist_root, capsys):
    outdir = runs[script]["b"]
    before = open(os.path.join(outdir, "checkpoint.pt"), "rb").read()
    capsys.readouterr()
    assert call(script, "--dataroot", mnist_root, "--outdir", outdir, "--evaluate", 30) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("FD "))
    assert all(f"{d}: " in line for d in range(10)) and "smallest share" in line
    result = json.load(open(os.path.join(outdir, "evaluation.json")))
    assert result["n"] == 30 and len(result["shares"]) == 10 and result["epoch"] == 2
    assert sum(result["shares"]) == pytest.approx(1) and result["smallest_share"] == min(result["shares"])
    assert float(line.split()[1]) == pytest.approx(result["FD"], abs=1e-3) and result["FD"] > 0
    assert Image.open(os.path.join(outdir, "evaluation.png")).size[0] > 300
    assert open(os.path.join(outdir, "checkpoint.pt"), "rb").read() == before  # trains nothing
    # the same command measures the same samples
    first = result["FD"]
    assert call(script, "--dataroot", mnist_root, "--outdir", outdir, "--evaluate", 30) == 0
    assert json.load(open(os.path.join(outdir, "evaluation.json")))["FD"] == first


def test_eval_every_measures_during_training_and_leaves_the_training_untouched(runs, tmp_path, mnist_root):
    script = "dcgan_mnist"  # BatchNorm in G: a measure that used the run's own G would change its statistics
    args = data_args(script, mnist_root, "") + ["--checkpoint-every", 2]
    assert call(script, *args, "--epochs", 2, "--eval-every", 1, "--outdir", tmp_path / "q") == 0
    measured, plain = load(tmp_path / "q"), load(runs[script]["a"])  # the same run without --eval-every
    for key in ("netG", "netD", "optimizerG", "optimizerD", "history", "rng", "fixed_noise"):
        assert_same(measured[key], plain[key], key)
    assert [row["epoch"] for row in measured["quality"]] == [1, 2]
    assert all(sum(row["shares"]) == pytest.approx(1) for row in measured["quality"])
    lines = open(tmp_path / "q" / "quality.csv").read().splitlines()
    assert lines[0] == "epoch,generator,FD,smallest_share,rarest_digit,best" and len(lines) == 3
    assert sum(int(line.rsplit(",", 1)[1]) for line in lines[1:]) == 1  # the best marked
    assert Image.open(tmp_path / "q" / "quality.png").size[0] > 300
    # a resumed run keeps the rows measured before the stop, and measures on as a straight run does
    assert call(script, *args, "--epochs", 1, "--eval-every", 1, "--outdir", tmp_path / "r") == 0
    assert call(script, *args, "--epochs", 2, "--eval-every", 1, "--outdir", tmp_path / "r", "--resume") == 0
    assert_same(load(tmp_path / "r")["quality"], measured["quality"])


def test_export_real_writes_the_training_images_as_the_training_sees_them(tmp_path, celeba_root, capsys):
    import torchvision.datasets as dset
    import torchvision.transforms as T
    args = ["--dataroot", celeba_root, "--workers", 0, "--outdir", tmp_path]
    assert call("dcgan_celeba", *args, "--export-real", 5) == 0
    files = sorted(os.listdir(tmp_path / "real"))
    assert files == [f"{k:05d}.png" for k in range(5)]
    tutorial = dset.ImageFolder(celeba_root, transform=T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor()]))
    exported = [T.ToTensor()(Image.open(tmp_path / "real" / f)) for f in files]
    assert exported[0].shape == (3, 64, 64)
    # each is exactly one of the training images (PNG keeps every value)
    tutorial_images = [tutorial[k][0] for k in range(len(tutorial))]
    assert all(any(torch.equal(e, t) for t in tutorial_images) for e in exported)
    assert not os.path.exists(tmp_path / "checkpoint.pt")  # trains nothing
