"""Issue: a run folder holds one run, and exactly what was asked; the rough edges a new user met."""
import json
import os
import signal
import time

import pytest
from PIL import Image

import common
from common import pictures
from common.progress import Progress
from conftest import call, cold, data_args, load, spawn


def images_in(folder):
    return sorted(os.listdir(folder))


def test_a_smaller_generate_replaces_the_larger_one(runs):
    outdir = runs["gan_mnist"]["b"]
    assert call("gan_mnist", "--outdir", outdir, "--generate", 7, "--interpolate") == 0
    assert call("gan_mnist", "--outdir", outdir, "--generate", 3) == 0
    assert images_in(os.path.join(outdir, "generated", "images")) == ["00000.png", "00001.png", "00002.png"]
    assert images_in(os.path.join(outdir, "generated")) == ["grid.png", "images"]  # no walk of the older command


def test_a_smaller_export_real_replaces_the_larger_one(tmp_path, celeba_root):
    args = ["--dataroot", celeba_root, "--workers", 0, "--outdir", tmp_path]
    assert call("dcgan_celeba", *args, "--export-real", 5) == 0
    assert call("dcgan_celeba", *args, "--export-real", 2) == 0
    assert images_in(tmp_path / "real") == ["00000.png", "00001.png"]


def test_overwrite_deletes_everything_of_the_old_run_and_nothing_else(tmp_path, mnist_root, capsys):
    args = ["--dataroot", mnist_root, "--batch-size", 16, "--outdir", tmp_path]
    assert call("dcgan_mnist", *args, "--epochs", 2) == 0
    assert call("dcgan_mnist", *args, "--generate", 3) == 0
    (tmp_path / "notes.txt").write_text("mine")
    assert os.path.exists(tmp_path / "checkpoint.prev.pt")
    assert call("dcgan_mnist", *args, "--epochs", 1, "--overwrite") == 0
    assert not os.path.exists(tmp_path / "checkpoint.prev.pt")  # (one save since: no older copy of this run)
    assert not os.path.exists(tmp_path / "generated") and (tmp_path / "notes.txt").read_text() == "mine"
    assert images_in(tmp_path / "samples") == ["epoch_0000.png", "epoch_0001.png"]
    # a damaged checkpoint of the new run can never fall back to the old run's
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:500])
    capsys.readouterr()
    assert call("dcgan_mnist", *args, "--epochs", 2, "--resume") == 1
    assert "no good older copy" in capsys.readouterr().err


def test_evaluate_leaves_the_trainings_quality_picture_alone(tmp_path, mnist_root):
    args = data_args("dcgan_mnist", mnist_root, "") + ["--outdir", tmp_path]
    assert call("dcgan_mnist", *args, "--epochs", 1, "--eval-every", 1) == 0
    before = (tmp_path / "quality.png").read_bytes()
    assert call("dcgan_mnist", *args, "--evaluate", 20) == 0
    assert (tmp_path / "quality.png").read_bytes() == before
    assert Image.open(tmp_path / "evaluation.png").size[0] > 300 and os.path.exists(tmp_path / "evaluation.json")


def test_evaluate_with_more_samples_than_real_digits_says_so_and_measures_equal_numbers(runs, mnist_root, capsys):
    outdir = runs["gan_mnist"]["b"]
    assert call("gan_mnist", "--dataroot", mnist_root, "--outdir", outdir, "--evaluate", 100) == 0
    assert "more samples than the 40 real digits" in capsys.readouterr().out
    result = json.load(open(os.path.join(outdir, "evaluation.json")))
    assert result["n"] == result["n_real"] == 40


def test_quality_needs_real_digits_said_once(tmp_path, capsys):
    args = ["--fake-data", 16, "--batch-size", 8, "--outdir", tmp_path]
    assert call("gan_mnist", *args, "--epochs", 2, "--eval-every", 1) == 0
    out = capsys.readouterr().out
    assert out.count("measures samples against real digits") == 1 and "quality:" not in out
    assert not os.path.exists(tmp_path / "quality.csv")
    assert call("gan_mnist", *args, "--evaluate", 10) == 1
    err = capsys.readouterr().err
    assert "--fake-data has none" in err and len(err.strip().splitlines()) == 1


def test_output_closed_under_the_run_costs_nothing(tmp_path):
    """`python gan_mnist.py ... | head -1`: the run trains on, quietly, and saves as always."""
    p = spawn("gan_mnist", "--fake-data", 16, "--batch-size", 8, "--epochs", 4, "--outdir", tmp_path,
              env={"PYTHONUNBUFFERED": "1"})
    p.stdout.readline()
    p.stdout.close()  # the reader goes away
    err = p.stderr.read()
    assert p.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert load(tmp_path)["epoch"] == 4


def test_ctrl_c_while_starting_up_prints_no_traceback(tmp_path, mnist_root):
    p = cold("dcgan_mnist", "--dataroot", mnist_root, "--outdir", tmp_path)
    time.sleep(0.3)  # Python is still loading torch
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode in (-signal.SIGINT, 130), err
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "checkpoint.pt")


def test_ctrl_c_in_the_last_epoch_finishes_the_run(tmp_path, mnist_root):
    """Stopping at the end of the last epoch would leave nothing to continue: the run finishes."""
    p = spawn("gan_mnist", "--dataroot", mnist_root, "--batch-size", 16, "--epochs", 1, "--outdir", tmp_path,
              faults=("--signal-at", "0:2/SIGINT"))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "Stopped" not in err and "Continue with" not in err and "Done in" in out
    assert load(tmp_path)["epoch"] == 1


@pytest.mark.parametrize("case", ["bad dataroot", "generate into an empty folder"])
def test_a_failed_command_leaves_nothing_behind(case, tmp_path):
    if case == "bad dataroot":
        code = call("dcgan_mnist", "--dataroot", tmp_path / "nothing", "--outdir", tmp_path / "new")
        assert code == 1 and not os.path.exists(tmp_path / "new")
    else:
        (tmp_path / "empty").mkdir()
        assert call("dcgan_mnist", "--outdir", tmp_path / "empty", "--generate", 3) == 1
        assert os.listdir(tmp_path / "empty") == []


def test_a_tilde_in_outdir_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert call("gan_mnist", "--fake-data", 8, "--batch-size", 8, "--epochs", 1, "--outdir=~/runs/a") == 0
    assert os.path.exists(tmp_path / "runs" / "a" / "checkpoint.pt") and not os.path.exists(tmp_path / "~")


def test_the_eta_is_the_batches_left_at_the_pace_of_the_latest_wall_time(monkeypatch):
    """100 epochs of 10 batches. The first takes a second a batch, and its end 2 s more (a drawing, a
    save): right after it, only its pace is known (the first iteration, warming up, left out). The
    second runs at 0.5 s a batch, and its pace alone counts from then on; past PACE_WINDOW seconds
    the older epochs drop out of it."""
    now = [0.0]
    monkeypatch.setattr(common.progress.time, "monotonic", lambda: now[0])
    progress = Progress(epochs=100, batches=10, batch_size=4, n_images=40)
    progress.start_epoch(0, 0)
    for i in range(10):
        now[0] += 1
        progress.batch_done(i)
    assert progress.epoch_time() == (10, 4)  # seconds, images per second
    now[0] += 2
    progress.end_epoch()
    end = common.progress.END_SECONDS
    assert progress.eta(10) == pytest.approx(990 * (9 + 2) / 9 + end)  # (9 batches after the first, and the end's 2 s)
    progress.start_epoch(1, 0)
    for i in range(4):
        now[0] += 0.5
        progress.batch_done(i)
    assert progress.eta(4) == pytest.approx(986 * 0.5 + end)
    # 40 epochs more at that pace (6 s each with a 1 s end), then 50 at twice it (3 s each with a
    # 0.5 s end): the pace now is the new one alone, the older epochs out of the window
    for epoch in range(1, 91):
        batch_s, end_s = (0.5, 1) if epoch <= 40 else (0.25, 0.5)
        for i in range(4 if epoch == 1 else 0, 10):
            now[0] += batch_s
            progress.batch_done(i)
        now[0] += end_s
        progress.end_epoch()
        progress.start_epoch(epoch + 1, 0)
    now[0] += 0.25
    progress.batch_done(0)
    assert (progress.eta(1) - end) / (8 * 10 + 9) == pytest.approx(0.3, rel=0.01)  # (3 s for 10 batches, the ends in it)


def test_a_short_runs_smoothed_curve_keeps_up_with_it():
    ramp = [k / 100 for k in range(200)]  # a 2-epoch run whose loss climbs steadily
    smoothed = pictures.smooth(ramp, pictures.smoothing_weight(len(ramp)))
    assert abs(smoothed[-1] - ramp[-1]) < 0.05 and abs(smoothed[0] - ramp[0]) < 1e-12  # no lag, no start at 0
    assert pictures.smoothing_weight(30000) == pytest.approx(0.98)  # a long run: smoothed as before


def test_epochs_are_marked_at_round_numbers():
    epochs = [k // 100 for k in range(300 * 100)]
    assert list(pictures.epoch_ticks(epochs).values()) == [0, 50, 100, 150, 200, 250, 300]
    assert list(pictures.epoch_ticks([k // 10 for k in range(610)]).values()) == [0, 10, 20, 30, 40, 50, 60]


def test_the_quality_picture_of_a_short_run_has_whole_epochs(tmp_path, monkeypatch):
    import matplotlib.figure
    drawn = []
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig),
                                                                                    real_savefig(fig, *a, **k)))
    rows = [{"epoch": e, "FD": 10.0 / e, "smallest_share": 0.05} for e in (1, 2)]
    pictures.plot_over_epochs(rows, str(tmp_path / "q.png"))
    for ax in drawn[0].axes:
        assert all(float(t).is_integer() for t in ax.get_xticks())


def test_counts_are_said_in_words_that_agree_with_them(tmp_path, capsys):
    assert call("gan_mnist", "--fake-data", 1, "--batch-size", 1, "--epochs", 1, "--outdir", tmp_path) == 0
    assert "1 training image, 1 batch per epoch" in capsys.readouterr().out
