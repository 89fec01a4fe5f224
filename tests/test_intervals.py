"""Issue: what wall time or a count triggers (a drawing every DRAW_EVERY seconds, a save every
--checkpoint-every iterations, the torchrun agreement every AGREE_EVERY: tests/test_ddp.py), made
to happen at toy size by setting its interval in the test: at real size a first epoch lasts hours,
and each of these fires inside it."""
import os
import signal

import pytest
import torch
from PIL import Image

import common
from common import pictures
from common.progress import Progress
from conftest import assert_same, call, data_args, load, same_files
from faults import faulty_iter


def frames_of(path):
    with Image.open(path) as gif:
        return gif.n_frames


def no_temporaries(folder):
    return [f for _, dirs, files in os.walk(folder) for f in dirs + files if ".tmp" in f] == []


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_a_gif_of_any_number_of_frames_is_written_and_no_temporary_file_is_left(tmp_path, frames):
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    pngs = []
    for k in range(frames):
        pngs.append(str(tmp_path / f"epoch_{k:04d}.png"))
        pictures.save_grid(images * (k + 1) / frames, pngs[-1], nrow=2)
    pictures.write_gif(pngs, str(tmp_path / "progress.gif"), pictures.GifFrames(pictures.palette_of(images, 2)),
                       [f"epoch {k}" for k in range(frames)])
    assert frames_of(tmp_path / "progress.gif") == frames
    assert no_temporaries(tmp_path)


@pytest.fixture
def drawings(monkeypatch):
    """DRAW_EVERY = 0: the pictures are drawn after every iteration. Returns, for each drawing, the
    rows of history it drew, and the number of frames of each progress.gif it wrote (read back
    from the file): {"rows": [...], "gif frames": [...]}."""
    monkeypatch.setattr(pictures, "DRAW_EVERY", 0)
    seen, real_draw, real_write_gif = {"rows": [], "gif frames": []}, pictures.Pictures.draw, pictures.write_gif

    def draw(self, columns, *args, **kwargs):
        seen["rows"].append(len(columns["epoch"]))
        real_draw(self, columns, *args, **kwargs)

    def write_gif(pngs, path, *args, **kwargs):
        real_write_gif(pngs, path, *args, **kwargs)
        seen["gif frames"].append(frames_of(path))
    monkeypatch.setattr(pictures.Pictures, "draw", draw)
    monkeypatch.setattr(pictures, "write_gif", write_gif)
    return seen


def test_a_drawing_inside_the_first_epoch_with_one_sample_frame_so_far(drawings, tmp_path, celeba_root, capsys):
    assert call("dcgan_celeba", *data_args("dcgan_celeba", "", celeba_root), "--epochs", 1, "--outdir", tmp_path) == 0
    assert drawings["rows"] == [1, 2, 3, 3]  # after each of the 3 batches, and at the end
    # the GIF: from samples/epoch_0000.png alone at the first (and left as it was while no frame is new), then 2
    assert drawings["gif frames"] == [1, 2] and frames_of(tmp_path / "progress.gif") == 2
    assert "warning" not in capsys.readouterr().err and no_temporaries(tmp_path)


def test_a_stop_inside_the_first_epoch_draws_its_one_frame_and_exits_130(tmp_path, mnist_root, monkeypatch, capsys):
    monkeypatch.setattr(common.DataLoader, "__iter__", faulty_iter(signal_at="0:1/SIGINT"))
    args = data_args("gan_mnist", mnist_root, "") + ["--epochs", 2, "--outdir", tmp_path]
    assert call("gan_mnist", *args) == 130
    err = capsys.readouterr().err
    assert "Stopped in epoch 1/2 after batch 2 of 3" in err and "warning" not in err and "Traceback" not in err
    assert frames_of(tmp_path / "progress.gif") == 1 and no_temporaries(tmp_path)


def test_a_drawing_right_after_a_resume(drawings, tmp_path, mnist_root, capsys, monkeypatch):
    args = data_args("dcgan_mnist", mnist_root, "") + ["--outdir", tmp_path]
    monkeypatch.setattr(pictures, "DRAW_EVERY", 10**9)
    assert call("dcgan_mnist", *data_args("dcgan_mnist", mnist_root, ""), "--outdir", tmp_path / "straight",
                "--epochs", 2) == 0  # (its history.csv written whole, once, at the end)
    assert call("dcgan_mnist", *args, "--epochs", 1) == 0
    monkeypatch.setattr(pictures, "DRAW_EVERY", 0)
    drawings["rows"].clear(), drawings["gif frames"].clear()  # (the runs above drew once each, at their end)
    assert call("dcgan_mnist", *args, "--epochs", 2, "--resume") == 0
    assert drawings["rows"][0] == 4  # right after the first iteration of the resumed run (3 before it)
    assert drawings["gif frames"] == [2, 3] and frames_of(tmp_path / "progress.gif") == 3
    # history.csv: written whole after the resume, then grown by the new rows at each drawing
    assert same_files(tmp_path, tmp_path / "straight", "history.csv")
    assert "warning" not in capsys.readouterr().err and no_temporaries(tmp_path)


def test_a_periodic_save_mid_epoch_then_ctrl_c_then_resume_ends_bit_for_bit(tmp_path, mnist_root, monkeypatch):
    # 40 digits in batches of 4: 10 per epoch. Saves every 3 iterations: iteration 12 is batch 2 of
    # epoch 1 (the second); Ctrl-C as batch 4 of it begins stops after batch 5, saving there.
    args = ["--dataroot", mnist_root, "--batch-size", 4, "--epochs", 2, "--checkpoint-every", 3]
    assert call("gan_mnist", *args, "--outdir", tmp_path / "straight") == 0
    saves, real_write = [], common.run.write_checkpoint

    def write_checkpoint(state, outdir, where):
        saves.append((state["epoch"], state["iteration"]))
        real_write(state, outdir, where)
    monkeypatch.setattr(common.run, "write_checkpoint", write_checkpoint)
    monkeypatch.setattr(common.DataLoader, "__iter__", faulty_iter(signal_at="1:4/SIGINT"))
    assert call("gan_mnist", *args, "--outdir", tmp_path / "stopped") == 130
    # every 3 iterations, never at an epoch's last batch (its end saves at once), then the stop's save
    assert saves == [(0, 3), (0, 6), (0, 9), (1, 0), (1, 2), (1, 5)]
    prev = torch.load(tmp_path / "stopped" / "checkpoint.prev.pt", weights_only=True)
    assert (prev["epoch"], prev["iteration"]) == (1, 2)  # the periodic save, mid-epoch, kept as the older copy
    monkeypatch.undo()
    assert call("gan_mnist", *args, "--outdir", tmp_path / "stopped", "--resume") == 0
    assert_same(load(tmp_path / "straight"), load(tmp_path / "stopped"))
    assert same_files(tmp_path / "straight", tmp_path / "stopped", "history.csv")


def test_an_unexpected_error_in_the_bookkeeping_still_closes_the_run(tmp_path, mnist_root, monkeypatch):
    """The script's main() called directly, without run_script (which gives the handlers back for
    any command): the run itself gives back the Ctrl-C and SIGTERM handlers and the folder."""
    import gan_mnist
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    calls = []

    def broken_flush(history):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a bug in the bookkeeping")
        return real_flush(history)
    real_flush = common.history.History.flush
    monkeypatch.setattr(common.history.History, "flush", broken_flush)
    with pytest.raises(RuntimeError, match="a bug in the bookkeeping"):
        gan_mnist.main([str(a) for a in data_args("gan_mnist", mnist_root, "")] + ["--epochs", "3", "--outdir",
                                                                                  str(tmp_path)])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert not os.path.exists(tmp_path / ".lock")


def eta_of_a_simulated_run(monkeypatch, epochs, batches, batch_s, draw_every, draw_s, first_batch_s=None):
    """Progress driven as Run drives it, on a clock of the test's own: each batch takes batch_s (the
    first first_batch_s), the pictures are drawn every draw_every seconds (as Run.step and
    Run.end_epoch do), at draw_s each when the GIF has a new frame, else half of that. Returns
    [(epoch, batch, printed ETA, time really left)]."""
    now = [0.0]
    monkeypatch.setattr(common.progress.time, "monotonic", lambda: now[0])
    progress, drawn_at, gif_frames, seen = Progress(epochs, batches, 1, batches), 0.0, 0, []

    def draw(frames):
        nonlocal drawn_at, gif_frames
        now[0] += draw_s if frames > gif_frames else draw_s / 2
        gif_frames, drawn_at = frames, now[0]
    for epoch in range(epochs):
        progress.start_epoch(epoch, 0)
        for i in range(batches):
            now[0] += first_batch_s if (epoch, i) == (0, 0) and first_batch_s else batch_s
            progress.batch_done(i)
            seen.append((epoch, i, progress.eta(i + 1), now[0]))
            if now[0] - drawn_at >= draw_every:
                draw(epoch + 1)
        if now[0] - drawn_at >= draw_every and epoch + 1 < epochs:  # (as Run.end_epoch)
            draw(epoch + 2)
        progress.end_epoch()
    end = now[0] + common.progress.END_SECONDS  # (the last drawing, as Run.finish makes it, and the exit)
    return [(e, i, eta, end - t) for e, i, eta, t in seen]


def test_the_eta_of_a_first_epoch_with_drawings_in_it(monkeypatch):
    """A real-size first epoch: hundreds of batches, a drawing every few seconds inside it. The
    wall time the pace is measured over holds the drawings: once the first is a few seconds behind,
    the ETA is within 5 % of the truth."""
    rows = eta_of_a_simulated_run(monkeypatch, epochs=3, batches=400, batch_s=0.1, draw_every=5, draw_s=1.0)
    first_epoch = [(eta, left) for e, i, eta, left in rows if e == 0 and i > 80]  # (a drawing at 5 s: batch 50)
    # (the drawings are a sixth of the time: an ETA of the batches alone would be 16 % short)
    assert max(abs(eta - left) / left for eta, left in first_epoch) < 0.05


def test_the_eta_leaves_the_first_iteration_out_of_the_pace(monkeypatch):
    """The first iteration warms up (allocations, kernel choices): 3 s here, then 0.01 s a batch. A
    short run's ETA in its first epoch must not take 3 s for the pace of every batch."""
    rows = eta_of_a_simulated_run(monkeypatch, epochs=3, batches=100, batch_s=0.01, draw_every=30, draw_s=0.0,
                                  first_batch_s=3.0)
    at_batch_10 = next(eta for e, i, eta, left in rows if (e, i) == (0, 10))
    left = next(left for e, i, eta, left in rows if (e, i) == (0, 10))
    assert abs(at_batch_10 - left) / left < 0.15, (at_batch_10, left)


def test_the_eta_of_a_run_of_short_epochs_after_a_tenth_of_it(monkeypatch):
    """60 epochs of 100 batches, 0.01 s a batch, a drawing every 30 s at 0.5 s each and a slow first
    epoch (its first drawing, its warm-up): at epoch 10 the ETA is within 15 % of the truth."""
    rows = eta_of_a_simulated_run(monkeypatch, epochs=60, batches=100, batch_s=0.01, draw_every=30, draw_s=0.5,
                                  first_batch_s=1.0)
    eta, left = next((eta, left) for e, i, eta, left in rows if (e, i) == (10, 0))
    assert abs(eta - left) / left < 0.15, (eta, left)
