"""Issue: what users expect from training scripts: a smoke run with no data, progress and a
summary, the device printed, readable pictures."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SCRIPTS, call, run_sub


@pytest.mark.parametrize("script", SCRIPTS)
def test_fake_data_runs_with_no_dataset_and_prints_a_summary(script, tmp_path, capsys):
    extra = ["--ngf", 8, "--ndf", 8] if script == "dcgan_celeba" else []
    assert call(script, "--fake-data", 24, "--epochs", 1, "--batch-size", 8, "--dataroot", tmp_path / "none",
                "--outdir", tmp_path / "out", *extra) == 0
    out = capsys.readouterr().out
    assert "24 training images, 3 batches per epoch" in out
    assert f"device: {'cuda:0' if torch.cuda.is_available() else 'cpu'}" in out  # what --device auto picks
    assert "epoch 1/1 done in" in out and "img/s" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("Done in") and "final loss_d" in last and str(tmp_path / "out") in last
    size = 64 if script == "dcgan_celeba" else 28
    assert Image.open(tmp_path / "out" / "real_vs_fake.png").size[0] > 2 * size
    assert not os.path.exists(tmp_path / "none")  # nothing was downloaded or made there


def test_gif_frames_carry_their_epoch_number(runs):
    gif = Image.open(os.path.join(runs["gan_mnist"]["a"], "progress.gif"))
    grid = Image.open(os.path.join(runs["gan_mnist"]["a"], "samples", "epoch_0000.png")).convert("RGB")
    gif.seek(0)
    frame = np.asarray(gif.convert("RGB")).astype(int)
    label = frame[1:13, 3:40]
    assert (np.abs(label - np.asarray(grid)[1:13, 3:40]).sum(-1) > 100).any()  # text drawn over the grid
    assert ((label[..., 0] > 200) & (label[..., 2] < 80)).any()  # in yellow


def test_logs_stay_readable_without_a_terminal(tmp_path):
    code, out, err = run_sub("gan_mnist", "--fake-data", 16, "--epochs", 2, "--batch-size", 8,
                             "--checkpoint-every", 1, "--outdir", tmp_path)
    assert code == 0, err
    assert "\r" not in out + err  # no progress-bar redraws in a log file
    assert "epoch 2/2 done in" in out
    # without the bar, the ETA inside an epoch comes with each --checkpoint-every save
    assert "checkpoint.pt saved in epoch 2/2 after batch 1 of 2; run ETA 0:00:0" in out
