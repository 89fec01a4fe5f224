"""Issue: real faults, as they happen: a full disk (a real file-size limit, RLIMIT_FSIZE, which makes
a write fail with EFBIG as a full disk does with ENOSPC), a signal during --generate, --export-real
and the first decode, Ctrl-C pressed twice; and the rough edges a new user met."""
import glob
import os
import signal
import time

import pytest
from PIL import Image

import common
from conftest import ROOT, call, data_args, load, make_faces, run_sub, spawn, spawn_code
from faults import faulty_iter


def run_limited(script, *argv, limit):
    """(exit code, stdout, stderr) of the command in a process that may write no file beyond limit
    bytes (as `ulimit -f` sets it)."""
    return run_sub(script, *argv, limit=limit)


def temporaries(*folders):
    return [os.path.join(d, f) for folder in folders for d, dirs, files in os.walk(folder) for f in dirs + files
            if ".tmp" in f]


def one_sentence(err, *words):
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    for w in words:
        assert w in lines[0], (w, lines[0])


# ---------------------------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------------------------

def test_a_checkpoint_that_cannot_be_written_is_one_sentence_and_the_last_one_stays(tmp_path, mnist_root):
    args = ["--dataroot", mnist_root, "--outdir", tmp_path, "--batch-size", 16]
    assert call("gan_mnist", *args, "--epochs", 1) == 0
    before = (tmp_path / "checkpoint.pt").read_bytes()  # (6.6 MB: the nets and Adam's moments)
    code, out, err = run_limited("gan_mnist", *args, "--epochs", 2, "--resume", limit=2 * 2**20)
    assert code == 1
    one_sentence(err, "could not write", "checkpoint.pt", "File too large", "ulimit -f", "previous checkpoint is intact")
    assert (tmp_path / "checkpoint.pt").read_bytes() == before and temporaries(tmp_path) == []
    assert call("gan_mnist", *args, "--epochs", 2, "--resume") == 0  # and it goes on once it can write


def test_a_new_runs_first_checkpoint_that_cannot_be_written_says_there_is_nothing_to_resume(tmp_path, mnist_root):
    code, out, err = run_limited("gan_mnist", "--dataroot", mnist_root, "--outdir", tmp_path, "--batch-size", 16,
                                 "--epochs", 1, limit=2 * 2**20)
    assert code == 1
    one_sentence("\n".join(line for line in err.splitlines() if not line.startswith("warning: ")),
                 "checkpoint.pt", "File too large", "nothing to resume")
    assert not os.path.exists(tmp_path / "checkpoint.pt") and temporaries(tmp_path) == []


def test_a_best_generator_that_cannot_be_written_is_one_sentence(tmp_path, mnist_root):
    """best.pt (gan_mnist's G: about 1.1 MB) under a real 256 KB limit: the first measurement, at the
    end of epoch 1, before any checkpoint, stops the run in one sentence (the pictures that cannot
    be written either cost their warnings)."""
    code, out, err = run_limited("gan_mnist", "--dataroot", mnist_root, "--outdir", tmp_path, "--batch-size", 16,
                                 "--epochs", 2, "--eval-every", 1, limit=256 * 2**10)
    assert code == 1 and "epoch 1 quality of the live generator: FD " in out, err[-3000:]
    one_sentence("\n".join(line for line in err.splitlines() if not line.startswith(("warning: ", "notice: "))),
                 "best.pt", "File too large", "nothing to resume")
    assert not os.path.exists(tmp_path / "best.pt") and temporaries(tmp_path) == []


def test_pictures_and_history_that_cannot_be_written_cost_a_warning_each_not_the_run(tmp_path, mnist_root):
    """From batch 1 of the second epoch on, no file may exceed 256 bytes: every drawing (one after
    every iteration here) fails, each picture is named once, and training goes on until the save at
    the epoch's end, which cannot be written either: one sentence, the last checkpoint whole."""
    args = data_args("gan_mnist", mnist_root, "") + ["--epochs", 3, "--outdir", tmp_path]
    p = spawn("gan_mnist", *args, faults=("--file-size-limit-at", "1:1/256", "--draw-every", "0"))
    out, err = p.communicate(timeout=240)
    assert p.returncode == 1, err[-3000:]
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    # (progress.gif has no new frame to be written: samples/epoch_0002.png could not be)
    assert sorted(w.split()[4] for w in warnings) == ["history.csv", "losses.png", "real_vs_fake.png",
                                                      "samples/epoch_0002.png", "scores.png"]
    assert all("File too large" in w for w in warnings)
    endings = {w.split()[4]: w.split("; ")[-1] for w in warnings}
    assert endings.pop("real_vs_fake.png") == "the run ends without it."  # (drawn only as the run ends)
    assert endings.pop("samples/epoch_0002.png") == "training goes on without it."
    assert set(endings.values()) == {"training goes on, and it is drawn again later."}
    one_sentence("\n".join(line for line in err.splitlines() if line not in warnings), "checkpoint.pt",
                 "previous checkpoint is intact")
    assert "epoch 2/3 done" not in out  # (the epoch's line comes after its save)
    assert (load(tmp_path)["epoch"], load(tmp_path)["iteration"]) == (1, 0) and temporaries(tmp_path) == []
    # history.csv as last written (a row after each iteration, up to batch 0 of the second epoch): a failed
    # append is cut back off, so the file ends with whole rows
    rows = (tmp_path / "history.csv").read_text().splitlines()[1:]
    saved = [",".join(repr(x) for x in row) for row in zip(*(v.tolist() for v in load(tmp_path)["history"].values()))]
    assert rows[:3] == saved and len(rows) == 4 and rows[3].startswith("1,0,") and rows[3].count(",") == 5


def test_a_gif_that_cannot_be_written_raises_the_oserror_and_leaves_no_temporary_file(tmp_path):
    """(In a run, a picture's OSError becomes the warning above; the GIF's happens only when a new
    sample frame could be written, so it is caused here, in a child process under the limit.)"""
    child = f"""
import resource, sys, torch
sys.path.insert(0, {ROOT!r})
from common import pictures
images = torch.rand(16, 3, 32, 32) * 2 - 1
pngs = [f"{tmp_path}/{{k}}.png" for k in range(3)]
for k, png in enumerate(pngs):
    pictures.save_grid(images * (k + 1) / 3, png, 4)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))  # (a GIF of these: tens of KB)
pictures.write_gif(pngs, "{tmp_path}/progress.gif", pictures.GifFrames(pictures.palette_of(images, 4)))
"""
    p = spawn_code(child)
    p.stdout, p.stderr = p.communicate()
    assert p.returncode == 1 and "OSError: [Errno 27] File too large" in p.stderr, p.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == ["0.png", "1.png", "2.png"]  # the PNGs, and no GIF nor its temporary


def test_evaluate_that_cannot_write_its_files_is_one_sentence_after_its_result(tmp_path, mnist_root):
    assert call("gan_mnist", *data_args("gan_mnist", mnist_root, ""), "--epochs", 1, "--outdir", tmp_path) == 0
    code, out, err = run_limited("gan_mnist", "--dataroot", mnist_root, "--outdir", tmp_path, "--evaluate", 20,
                                 limit=4096)  # (evaluation.png: tens of KB)
    assert code == 1 and any(line.startswith("FD ") for line in out.splitlines()), err[-3000:]
    one_sentence(err, "could not write the evaluation's files", "File too large", "the result is the line above")
    assert not os.path.exists(tmp_path / "evaluation.png") and temporaries(tmp_path) == []


def test_an_image_cache_that_cannot_be_written_is_skipped_with_a_notice(tmp_path):
    faces = str(tmp_path / "faces")
    make_faces(os.path.join(faces, "img_align_celeba"), n=200, size=(64, 64))  # a cache of 2.4 MB
    args = ["--dataroot", faces, "--batch-size", 50, "--ngf", 4, "--ndf", 4, "--workers", 0, "--epochs", 1,
            "--outdir", tmp_path / "run"]
    code, out, err = run_limited("dcgan_celeba", *args, limit=2 * 2**20)
    assert code == 0, err[-3000:]
    notice = next(line for line in out.splitlines() if line.startswith("notice: the decoded images could not"))
    assert notice.count("File too large") == 2  # (the dataset's folder, then the outdir)
    assert "the next start decodes them again" in notice
    assert glob.glob(os.path.join(faces, "*.pt")) == [] and temporaries(faces, tmp_path / "run") == []
    assert call("dcgan_celeba", *args, "--overwrite") == 0  # (no limit)
    assert len(glob.glob(os.path.join(faces, "image_cache_*.pt"))) == 1


@pytest.mark.parametrize("command", ["generate", "export-real"])
def test_generate_and_export_real_on_a_full_disk_keep_what_was_there(command, runs, tmp_path, celeba_root):
    outdir = runs["dcgan_celeba"]["b"]
    flags = ["--generate", 6] if command == "generate" else ["--dataroot", celeba_root, "--export-real", 6]
    folder = os.path.join(outdir, "generated" if command == "generate" else "real")
    assert call("dcgan_celeba", "--outdir", outdir, *flags[:-1], 3) == 0
    before = sorted(os.listdir(folder))
    code, out, err = run_limited("dcgan_celeba", "--outdir", outdir, *flags, limit=2000)  # (a 64x64 PNG: ~10 KB)
    assert code == 1
    one_sentence(err, f"could not write {folder}/", "File too large", "left as it was")
    assert sorted(os.listdir(folder)) == before and temporaries(outdir) == []


# ---------------------------------------------------------------------------------------------
# Signals outside the training loop: no temporary file or folder is left
# ---------------------------------------------------------------------------------------------

def stop_when(p, pattern, signum, timeout=120):
    """Send p signum as soon as a path matching the glob pattern exists."""
    t0 = time.monotonic()
    while not glob.glob(pattern):
        assert p.poll() is None, "the command ended before it could be stopped"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.005)
    p.send_signal(signum)
    return p.communicate(timeout=120)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_during_generate_leaves_the_earlier_images_and_no_temporary_folder(signum, code, runs):
    outdir = runs["gan_mnist"]["b"]
    assert call("gan_mnist", "--outdir", outdir, "--generate", 3) == 0
    p = spawn("gan_mnist", "--outdir", outdir, "--generate", 20000)
    out, err = stop_when(p, os.path.join(outdir, "generated.tmp*", "images", "00*.png"), signum)
    assert p.returncode == code and "Traceback" not in err, err[-3000:]
    assert sorted(os.listdir(os.path.join(outdir, "generated", "images"))) == ["00000.png", "00001.png", "00002.png"]
    assert temporaries(outdir) == []


def test_a_stop_during_export_real_leaves_no_temporary_folder(tmp_path):
    faces = str(tmp_path / "faces")
    make_faces(os.path.join(faces, "img_align_celeba"), n=3000, size=(32, 32))
    outdir = tmp_path / "run"
    p = spawn("dcgan_celeba", "--dataroot", faces, "--outdir", outdir, "--export-real", 3000)
    out, err = stop_when(p, str(outdir / "real.tmp*" / "0*.png"), signal.SIGTERM)
    assert p.returncode == 143 and "Traceback" not in err, err[-3000:]
    assert not os.path.exists(outdir / "real") and temporaries(outdir) == []


def test_the_first_decode_keeps_no_tensor_a_worker_sent_under_a_real_open_file_limit(tmp_path):
    """Each tensor a decoding worker sends holds an open file while it lives. 1,200 images in
    chunks of 4 are 300 chunks, each with its images and its labels: kept, they would need more
    open files than the limit of 128 allows (the labels were, once, and CelebA's 792 chunks of 256
    came near a desktop's 1,024)."""
    make_faces(str(tmp_path / "faces" / "img"), n=1200, size=(8, 8))
    child = f"""
import resource, sys
sys.path.insert(0, {ROOT!r})
import torchvision.datasets as dset
import common.data as data
data.CHUNK = 4
dataset = dset.ImageFolder({str(tmp_path / "faces")!r})
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
images, labels, bad = data.decode_each(dataset, [])
print(len(images), len(labels), len(bad), images.shape[1:])
"""
    p = spawn_code(child)
    p.stdout, p.stderr = p.communicate()
    assert p.returncode == 0 and p.stdout.split()[:3] == ["1200", "1200", "0"], p.stderr[-3000:]


def test_a_signal_during_a_folder_swap_acts_after_it_and_leaves_no_temporary(tmp_path, monkeypatch):
    """--generate and --export-real replace their folder whole: a real SIGTERM that comes between
    the two renames (old aside, new in) acts once both are done, and the old folder is removed."""
    path = tmp_path / "generated"
    path.mkdir()
    (path / "old.png").write_text("old")
    real_replace = os.replace

    def replace(src, dst):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # (Python runs the handler between two bytecodes: here, were it not held)
        real_replace(src, dst)
    old = signal.signal(signal.SIGTERM, common.errors.raise_terminated)  # (as run_script has it outside training)
    monkeypatch.setattr(os, "replace", replace)
    try:
        with pytest.raises(common.errors.Terminated):
            with common.outdir.replaced_folder(str(path)) as tmp:
                open(os.path.join(tmp, "new.png"), "w").write("new")
    finally:
        signal.signal(signal.SIGTERM, old)
    assert os.listdir(path) == ["new.png"] and os.listdir(tmp_path) == ["generated"]


def test_a_signal_inside_signals_held_acts_when_the_block_is_done():
    """Held by Python's handlers, not by the OS's mask (which holds a signal for one thread only).
    Unheld, a SIGTERM that comes while torch forks its decoding workers can run its handler inside
    an at-fork hook (logging's), where the exception it raises is printed and dropped: the command
    went on as if nothing had come."""
    seen = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append("handler"))
    try:
        with common.signals.signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # (Python runs a handler between two bytecodes: it would have run here)
            seen.append("end of the block")
        seen.append("after it")
    finally:
        signal.signal(signal.SIGTERM, old)
    assert seen == ["end of the block", "handler", "after it"]


def test_a_stop_during_the_first_decode_leaves_no_cache_and_a_dead_ones_temporary_is_removed(tmp_path):
    faces = str(tmp_path / "faces")
    make_faces(os.path.join(faces, "img_align_celeba"), n=3000, size=(32, 32))  # (decoded in seconds here)
    # what a decode killed with kill -9 while writing its cache leaves: a temporary of a process that is gone
    dead = int(open("/proc/sys/kernel/pid_max").read())  # (no process has it: process ids stay below it)
    stale = os.path.join(faces, f"image_cache_64px_0123456789abcdef.pt.tmp{dead}")
    open(stale, "wb").write(b"x" * 1000)
    p = spawn("dcgan_celeba", "--dataroot", faces, "--outdir", tmp_path / "run", "--epochs", 1,
              env={"PYTHONUNBUFFERED": "1"})
    for line in p.stdout:
        if line.startswith("Decoding"):
            break
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err, err[-3000:]
    assert glob.glob(os.path.join(faces, "*.pt*")) == [stale]  # (decoding: no cache yet, and no temporary)
    assert not os.path.exists(tmp_path / "run")
    assert call("dcgan_celeba", "--dataroot", faces, "--outdir", tmp_path / "run", "--epochs", 1, "--batch-size", 500,
                "--ngf", 4, "--ndf", 4) == 0
    assert not os.path.exists(stale)


# ---------------------------------------------------------------------------------------------
# Ctrl-C twice
# ---------------------------------------------------------------------------------------------

def test_ctrl_c_twice_in_the_first_epoch_still_saves_before_quitting(tmp_path, mnist_root):
    """Pressed twice (a common habit) mid-epoch, before any save: the second waits for the save."""
    args = ["--dataroot", mnist_root, "--batch-size", 4, "--epochs", 3, "--outdir", tmp_path]
    p = spawn("gan_mnist", *args, faults=("--signal-at", "0:3/SIGINT,SIGINT"))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert "Still saving" in err and "Stopped in epoch 1/3 after batch 4 of 10" in err
    assert (load(tmp_path)["epoch"], load(tmp_path)["iteration"]) == (0, 4)
    assert call("gan_mnist", *args, "--resume") == 0


def test_ctrl_c_while_the_stops_save_is_being_written_lets_it_finish(tmp_path, mnist_root):
    args = ["--dataroot", mnist_root, "--batch-size", 4, "--epochs", 3, "--outdir", tmp_path]
    p = spawn("gan_mnist", *args, faults=("--signal-at", "0:3/SIGINT", "--signal-during-save", "1/SIGINT"))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert "Still saving" in err and "Stopped in epoch 1/3 after batch 4 of 10" in err
    assert (load(tmp_path)["epoch"], load(tmp_path)["iteration"]) == (0, 4) and temporaries(tmp_path) == []


def test_ctrl_c_pressed_twice_50_ms_apart_from_outside(tmp_path, mnist_root):
    args = ["--dataroot", mnist_root, "--batch-size", 1, "--epochs", 1000, "--checkpoint-every", 10**6,
            "--outdir", tmp_path]
    p = spawn("gan_mnist", *args, env={"PYTHONUNBUFFERED": "1"})
    for line in p.stdout:  # wait until the second epoch trains
        if line.startswith("epoch 1/"):
            break
    p.send_signal(signal.SIGINT)
    time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    stopped = err.split("Stopped ")[1].split(";")[0]  # in epoch 2/1000 after batch 7 of 40, say
    ckpt = load(tmp_path)
    assert stopped == (f"in epoch {ckpt['epoch'] + 1}/1000 after batch {ckpt['iteration']} of 40"
                       if ckpt["iteration"] else f"after epoch {ckpt['epoch']}/1000")


@pytest.mark.parametrize("stopped", [True, False])
def test_ctrl_c_while_the_pictures_are_drawn_as_the_run_ends_quits_at_once(stopped, tmp_path, mnist_root,
                                                                            monkeypatch, capsys):
    """Once the last save is written (a stop's, or the last epoch's), Ctrl-C is Python's own again:
    a real one pressed while the pictures are redrawn quits at once, the checkpoint whole."""
    real_draw = common.pictures.Pictures.draw

    def draw(pictures, columns, quality_rows=(), final=False):
        if final:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # (Python runs the handler between two bytecodes: here)
        real_draw(pictures, columns, quality_rows, final)
    monkeypatch.setattr(common.pictures.Pictures, "draw", draw)
    if stopped:
        monkeypatch.setattr(common.DataLoader, "__iter__", faulty_iter(signal_at="0:1/SIGINT"))
    assert call("gan_mnist", *data_args("gan_mnist", mnist_root, ""), "--epochs", 2, "--outdir", tmp_path) == 130
    err = capsys.readouterr().err
    assert "interrupted outside the training loop" in err
    assert ("Stopped in epoch 1/2 after batch 2 of 3" in err) == stopped
    assert not (tmp_path / "real_vs_fake.png").exists()  # (drawn by the last drawing only: it was cut)
    assert (load(tmp_path)["epoch"], load(tmp_path)["iteration"]) == ((0, 2) if stopped else (2, 0))


# ---------------------------------------------------------------------------------------------
# Rough edges
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("made", [True, False])
def test_a_folder_without_mnist_is_left_as_it_was(made, tmp_path, capsys):
    root = tmp_path / "data"
    if made:
        root.mkdir()
    assert call("gan_mnist", "--dataroot", root, "--outdir", tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert "official .gz archives" in err and "(or their .gz)" not in err
    assert (os.listdir(root) == []) if made else not os.path.exists(root)


def test_one_way_of_counting_in_every_line(tmp_path, mnist_root, capsys, monkeypatch):
    args = data_args("gan_mnist", mnist_root, "") + ["--outdir", tmp_path, "--checkpoint-every", 100]
    monkeypatch.setattr(common.DataLoader, "__iter__", faulty_iter(signal_at="1:1/SIGINT"))
    assert call("gan_mnist", *args, "--epochs", 3) == 130
    assert "Stopped in epoch 2/3 after batch 2 of 3; saved" in capsys.readouterr().err
    monkeypatch.undo()
    assert call("gan_mnist", *args, "--epochs", 3, "--resume") == 0
    out = capsys.readouterr().out
    assert "Resuming in epoch 2/3 after batch 2 of 3" in out and "epoch 2/3 done" in out and "epoch 3/3 done" in out
    assert call("gan_mnist", *args, "--epochs", 4, "--resume") == 0
    out = capsys.readouterr().out
    assert "Resuming after epoch 3/4" in out and "epoch 4/4 done" in out


def test_a_changed_image_folder_is_refused_saying_what_changed(tmp_path, capsys):
    faces = tmp_path / "faces"
    make_faces(str(faces / "img_align_celeba"), n=12, size=(32, 32))
    args = ["--dataroot", faces, "--batch-size", 4, "--ngf", 4, "--ndf", 4, "--workers", 0, "--outdir", tmp_path / "run"]
    assert call("dcgan_celeba", *args, "--epochs", 1) == 0
    folder = faces / "img_align_celeba"
    make_faces(str(tmp_path / "more"), n=15, size=(32, 32), seed=1)
    for name in ("000013.jpg", "000014.jpg", "000015.jpg"):
        os.replace(tmp_path / "more" / name, folder / name)
    os.remove(folder / "000001.jpg")
    Image.new("RGB", (40, 40)).save(folder / "000002.jpg")
    capsys.readouterr()
    assert call("dcgan_celeba", *args, "--epochs", 2, "--resume") == 1
    err = capsys.readouterr().err
    assert "3 images added (img_align_celeba/000013.jpg, img_align_celeba/000014.jpg, img_align_celeba/000015.jpg), " \
           "1 image removed (img_align_celeba/000001.jpg), 1 image changed in size (img_align_celeba/000002.jpg)" in err


def test_export_real_with_fewer_images_than_asked_says_so(tmp_path, celeba_root, capsys):
    assert call("dcgan_celeba", "--dataroot", celeba_root, "--outdir", tmp_path, "--export-real", 100) == 0
    assert "--export-real 100 asked for, but the dataset holds 24 images: writing those" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "real")) == 24


def test_overwrite_deletes_what_the_run_wrote_by_name_and_nothing_else(tmp_path, mnist_root):
    args = data_args("gan_mnist", mnist_root, "") + ["--outdir", tmp_path]
    assert call("gan_mnist", *args, "--epochs", 1) == 0
    assert call("gan_mnist", *args, "--generate", 3) == 0
    mine = [tmp_path / "samples" / "my_notes.txt", tmp_path / "samples" / "best.png",
            tmp_path / "generated" / "images" / "picked.png"]
    for path in mine:
        path.write_text("mine")
    assert call("gan_mnist", *args, "--epochs", 1, "--overwrite") == 0
    assert all(path.read_text() == "mine" for path in mine)
    assert sorted(os.listdir(tmp_path / "samples")) == ["best.png", "epoch_0000.png", "epoch_0001.png", "my_notes.txt"]
    assert os.listdir(tmp_path / "generated") == ["images"] and os.listdir(tmp_path / "generated" / "images") == [
        "picked.png"]
