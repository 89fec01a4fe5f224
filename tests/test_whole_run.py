"""Issue: the whole run as a user waits for it. Timings are measured by benchmarks/, never asserted
here; these check the behaviour behind them: the derived pictures are drawn on a cadence, not
after every epoch, yet complete when the run ends, stops or diverges; --generate caps its grid."""
import csv
import os

import pytest
from PIL import Image

import common
from common import pictures
from conftest import call, data_args
from faults import faulty_iter


def test_the_derived_pictures_are_not_redrawn_after_every_epoch(tmp_path, mnist_root, monkeypatch):
    drawn = []
    real_plot = pictures.plot_curves
    monkeypatch.setattr(pictures, "plot_curves", lambda history, names, path, *a: (
        drawn.append((os.path.basename(path), len(history["epoch"]))), real_plot(history, names, path, *a)))
    monkeypatch.setattr(pictures, "DRAW_EVERY", 10**9)  # a run far shorter than the drawing interval
    assert call("gan_mnist", *data_args("gan_mnist", mnist_root, ""), "--epochs", 6, "--outdir", tmp_path) == 0
    # at the end (18 iterations) only, not after each of the 6 epochs
    assert drawn == [("losses.png", 18), ("scores.png", 18)]
    assert Image.open(tmp_path / "progress.gif").n_frames == 7  # complete: epochs 0 to 6
    assert len(open(tmp_path / "history.csv").readlines()) == 1 + 18


@pytest.mark.parametrize("script", ["gan_mnist", "dcgan_mnist"])  # BCELoss raises on NaN; BCEWithLogits does not
def test_the_pictures_show_the_run_up_to_a_divergence(script, tmp_path, mnist_root, monkeypatch):
    monkeypatch.setattr(pictures, "DRAW_EVERY", 10**9)
    monkeypatch.setattr(common.DataLoader, "__iter__", faulty_iter(nan_at="2:1"))
    assert call(script, *data_args(script, mnist_root, ""), "--epochs", 4, "--outdir", tmp_path) == 3
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [(int(r["epoch"]), int(r["iteration"])) for r in rows][-1] == (2, 0)  # the last good iteration
    assert len(rows) == 7 and Image.open(tmp_path / "progress.gif").n_frames == 3  # epochs 0, 1, 2


def test_generate_shows_at_most_256_images_in_its_grid(runs):
    outdir = runs["gan_mnist"]["b"]
    assert call("gan_mnist", "--outdir", outdir, "--generate", 300) == 0
    assert len(os.listdir(os.path.join(outdir, "generated", "images"))) == 300
    assert Image.open(os.path.join(outdir, "generated", "grid.png")).size == (16 * 30 + 2, 16 * 30 + 2)
