"""Issue: speed. The opt-in flags that change numerics work, save plain checkpoints, and a resume
cannot silently switch them. (Timings are measured by benchmarks/bench.py, never asserted.)"""
import importlib
import math

import torch
import torch.nn as nn

import common
from conftest import assert_same, call, data_args, load


def test_amp_and_channels_last_train_and_are_reproducible(tmp_path, mnist_root, celeba_root, capsys):
    args = data_args("dcgan_celeba", mnist_root, celeba_root) + ["--epochs", 1, "--amp", "--channels-last"]
    assert call("dcgan_celeba", *args, "--outdir", tmp_path / "a") == 0
    assert call("dcgan_celeba", *args, "--outdir", tmp_path / "b") == 0
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert_same(a, b)
    assert all(math.isfinite(x) for x in a["history"]["loss_d"] + a["history"]["loss_g"])
    plain = importlib.import_module("dcgan_celeba").Generator(1, ngf=8)
    plain.load_state_dict(a["netG"])  # no wrapper names in the checkpoint
    # switching --amp off on resume would change the numerics: refused
    capsys.readouterr()
    assert call("dcgan_celeba", *args[:-2], "--outdir", tmp_path / "a", "--epochs", 2, "--resume",
                "--channels-last") == 1
    assert "amp: True -> False" in capsys.readouterr().err


def test_autocast_wrapper_keeps_bceloss_in_float32():
    net = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())
    wrapped = common.device.Autocast(net, "cpu")
    out = wrapped(torch.randn(3, 4))
    assert out.dtype == torch.float32
    nn.BCELoss()(out, torch.ones(3, 1)).backward()
    assert net[0].weight.grad is not None
    assert common.device.bare(wrapped) is net


def test_compile_trains_and_saves_plain_weights(tmp_path, monkeypatch):
    # torch.compile as --compile calls it, with its graphs run by AOTAutograd rather than generated
    # as C++ by inductor (a minute of compiling on a 2-core CPU: the device check compiles on the GPU)
    real_compile, compiled = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda net, **kwargs: compiled.append(net) or real_compile(
        net, backend="aot_eager", **kwargs))
    assert call("gan_mnist", "--fake-data", 32, "--epochs", 1, "--batch-size", 16, "--compile",
                "--outdir", tmp_path) == 0
    ckpt = load(tmp_path)
    gan = importlib.import_module("gan_mnist")
    gan.make_generator().load_state_dict(ckpt["netG"])
    assert ckpt["settings"]["compile"] is True and len(compiled) == 2  # (both nets)
