"""Issue: better samples than the lessons from the same training: the best generator kept (best.pt),
an averaged one (--ema) measured beside it, --generator choosing what is sampled, and the DCGAN
tutorial's own progress frames."""
import json
import os

import pytest
import torch
import torch.nn as nn
from PIL import Image

import common
from common import quality
from common.average import Average
from conftest import assert_same, call, data_args, load, same_files
from faults import faulty_iter


def rows_of(folder):
    return load(folder)["quality"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory, mnist_root):
    """dcgan_mnist (BatchNorm in G), 3 epochs measured every epoch, with --ema: straight, and stopped
    by a real Ctrl-C in the second epoch then resumed."""
    base = tmp_path_factory.mktemp("measured")
    args = data_args("dcgan_mnist", mnist_root, "") + ["--epochs", 3, "--eval-every", 1, "--ema",
                                                       "--checkpoint-every", 2]
    assert call("dcgan_mnist", *args, "--outdir", base / "straight") == 0
    with pytest.MonkeyPatch.context() as stop:
        stop.setattr(common.DataLoader, "__iter__", faulty_iter(signal_at="1:1/SIGINT"))
        assert call("dcgan_mnist", *args, "--outdir", base / "resumed") == 130
    assert call("dcgan_mnist", *args, "--outdir", base / "resumed", "--resume") == 0
    return base / "straight", base / "resumed", args


def test_the_best_generator_is_kept_with_its_epoch_and_measure(measured):
    straight, _, _ = measured
    rows = rows_of(straight)
    assert [(r["epoch"], r["generator"]) for r in rows] == [(e, g) for e in (1, 2, 3) for g in ("live", "average")]
    best = min(rows, key=lambda r: r["FD"])
    kept = torch.load(straight / "best.pt", weights_only=True)
    assert (kept["epoch"], kept["generator"], kept["score"], kept["value"]) == (best["epoch"], best["generator"], "FD",
                                                                                best["FD"])
    if (best["epoch"], best["generator"]) == (3, "live"):
        assert_same(kept["netG"], load(straight)["netG"])
    lines = open(straight / "quality.csv").read().splitlines()
    assert lines[0] == "epoch,generator,FD,smallest_share,rarest_digit,best"
    marked = [line for line in lines[1:] if line.endswith(",1")]
    assert len(marked) == 1 and marked[0].startswith(f"{best['epoch']},{best['generator']},{best['FD']!r}")
    assert Image.open(straight / "quality.png").size[0] > 300


def test_a_resumed_run_knows_its_best_and_ends_bit_for_bit(measured):
    straight, resumed, _ = measured
    assert_same(load(straight), load(resumed))  # the average and the quality rows included
    assert_same(torch.load(straight / "best.pt", weights_only=True), torch.load(resumed / "best.pt", weights_only=True))
    assert same_files(straight, resumed, "quality.csv")


def test_the_average_leaves_the_training_as_it_was(measured, runs, mnist_root, tmp_path):
    straight, _, _ = measured
    args = data_args("dcgan_mnist", mnist_root, "") + ["--epochs", 3, "--eval-every", 1, "--checkpoint-every", 2]
    assert call("dcgan_mnist", *args, "--outdir", tmp_path) == 0
    with_average, without = load(straight), load(tmp_path)
    for key in ("netG", "netD", "optimizerG", "optimizerD", "history", "rng", "fixed_noise"):
        assert_same(with_average[key], without[key], key)
    assert without["average"] is None and with_average["average"]["images"] == 3 * 3 * 16
    averaged, live = with_average["average"]["weights"], with_average["netG"]
    assert not torch.equal(averaged["gen.0.0.weight"], live["gen.0.0.weight"])


def test_the_average_follows_stylegan2_adas_rule():
    """beta = 0.5 ** (batch / half-life), the half-life ramped up as RAMP_UP of the images seen."""
    net = nn.Linear(3, 2)
    average = Average(net, batch_size=64)
    start = average.net.weight.clone()
    expected, images = start.clone(), 0
    for step in range(5):
        with torch.no_grad():
            net.weight.add_(1.0)
        images += 64
        half_life = min(common.average.HALF_LIFE_IMAGES * 64 / 32, images * common.average.RAMP_UP)
        beta = 0.5 ** (64 / half_life)
        expected = beta * expected + (1 - beta) * net.weight.detach()
        average.update(net)
        assert torch.allclose(average.net.weight, expected, atol=1e-6)
    assert not torch.equal(average.net.weight, start) and not average.net.weight.requires_grad


def test_the_average_is_sampled_with_batch_statistics_as_the_tutorials_sample():
    """Sampled in training mode, as the scripts sample G: each batch normalised by its own
    statistics. The running statistics (copied from the live G) are read by nothing."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh())
    average = Average(net, batch_size=32)
    first = torch.cat(list(quality.samples(average.net, (4,), (8,), 10, seed=1)))
    with torch.no_grad():
        average.net[1].running_mean.fill_(100.0)
        average.net[1].running_var.fill_(1e-3)
    assert torch.equal(torch.cat(list(quality.samples(average.net, (4,), (8,), 10, seed=1))), first)
    with torch.no_grad():
        net[1].running_mean.fill_(7.0)
    average.update(net)
    assert torch.equal(average.net[1].running_mean, net[1].running_mean)  # (copied, as StyleGAN2-ADA does)


def test_generate_uses_the_best_kept_and_says_which(measured, capsys):
    straight, _, _ = measured
    kept = torch.load(straight / "best.pt", weights_only=True)
    capsys.readouterr()
    assert call("dcgan_mnist", "--outdir", straight, "--generate", 4) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Sampling")]
    assert said == [f"Sampling the best generator kept (best.pt: the {kept['generator']} generator of epoch "
                    f"{kept['epoch']}, FD {kept['value']:.3f})"]
    image = {"best": (straight / "generated" / "images" / "00000.png").read_bytes()}
    for which, words in (("last", "the last generator (checkpoint.pt: epoch 3)"),
                         ("average", "the averaged generator (--ema) of checkpoint.pt (epoch 3)")):
        assert call("dcgan_mnist", "--outdir", straight, "--generate", 4, "--generator", which) == 0
        assert f"Sampling {words}" in capsys.readouterr().out
        image[which] = (straight / "generated" / "images" / "00000.png").read_bytes()
    # the best is the generator best.pt names: the last or the average where that was epoch 3's
    same = {("live", 3): "last", ("average", 3): "average"}.get((kept["generator"], kept["epoch"]))
    assert [w for w in ("last", "average") if image[w] == image["best"]] == ([same] if same else [])


def test_evaluate_says_which_generator_it_measured(measured, mnist_root, capsys):
    straight, _, _ = measured
    assert call("dcgan_mnist", "--dataroot", mnist_root, "--outdir", straight, "--evaluate", 20, "--generator",
                "last") == 0
    assert "Measuring the last generator (checkpoint.pt: epoch 3)" in capsys.readouterr().out
    assert json.load(open(straight / "evaluation.json"))["generator"].startswith("the last generator")


@pytest.mark.parametrize("which,needs", [("best", "--eval-every"), ("average", "--ema")])
def test_a_generator_the_run_did_not_keep_is_one_sentence(which, needs, runs, capsys):
    assert call("gan_mnist", "--outdir", runs["gan_mnist"]["b"], "--generate", 2, "--generator", which) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and needs in err and "kept no" in err


def test_the_mnist_scripts_measure_a_tenth_of_a_default_run(tmp_path, mnist_root, capsys):
    """--eval-every's default: every tenth of --epochs (a default gan_mnist run: every 30 epochs; 10
    epochs: every epoch), none in a run of fewer than 10 epochs."""
    args = data_args("gan_mnist", mnist_root, "")
    assert call("gan_mnist", *args, "--epochs", 10, "--outdir", tmp_path / "ten") == 0
    assert [(r["epoch"], r["generator"]) for r in rows_of(tmp_path / "ten")] == [(e, "live") for e in range(1, 11)]
    assert call("gan_mnist", *args, "--epochs", 9, "--outdir", tmp_path / "nine") == 0
    assert rows_of(tmp_path / "nine") == [] and not os.path.exists(tmp_path / "nine" / "best.pt")
    assert "notice" not in capsys.readouterr().out


def test_the_tutorials_frames_every_500_iterations_and_the_last_survive_a_stop(tmp_path, celeba_root, monkeypatch):
    """dcgan_celeba keeps a frame when iters % 500 == 0 and at the last iteration, as the tutorial's
    img_list; 500 is set to 2 here: 6 iterations give frames 0, 2, 4 and 5. A run stopped by a real
    Ctrl-C after iteration 4 and resumed gets the same frames, and the same progress.gif."""
    celeba = __import__("dcgan_celeba")
    monkeypatch.setattr(celeba, "frame_every", 2)
    args = data_args("dcgan_celeba", "", celeba_root) + ["--epochs", 2]
    assert call("dcgan_celeba", *args, "--outdir", tmp_path / "straight") == 0
    names = [f"iteration_{k:06d}.png" for k in (0, 2, 4, 5)]
    assert sorted(os.listdir(tmp_path / "straight" / "frames")) == names
    assert Image.open(tmp_path / "straight" / "progress.gif").n_frames == 4
    with monkeypatch.context() as stop:
        stop.setattr(common.DataLoader, "__iter__", faulty_iter(signal_at="1:1/SIGINT"))
        assert call("dcgan_celeba", *args, "--outdir", tmp_path / "stopped") == 130
    assert sorted(os.listdir(tmp_path / "stopped" / "frames")) == names[:3]
    assert call("dcgan_celeba", *args, "--outdir", tmp_path / "stopped", "--resume") == 0
    for name in names:
        assert same_files(tmp_path / "straight", tmp_path / "stopped", os.path.join("frames", name))
    assert same_files(tmp_path / "straight", tmp_path / "stopped", "progress.gif")
    assert sorted(os.listdir(tmp_path / "straight" / "samples")) == [f"epoch_000{k}.png" for k in range(3)]
