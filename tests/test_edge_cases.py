"""Issue: edge cases found when tried as a new user would: one sentence, a non-zero exit where it
refuses, no traceback, and no run lost."""
import os
import signal

import pytest
import torch

from conftest import call, load, spawn


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("value", ["99999999999999999999", "-1", "4294967296", "1.5"])
def test_a_seed_out_of_range_is_an_argparse_error(value, capsys):
    assert call("gan_mnist", "--seed", value) == 2
    err = capsys.readouterr().err
    assert "argument --seed" in err and "0 to 4294967295" in err and "Traceback" not in err


def test_the_largest_seed_trains(tmp_path):
    assert call("gan_mnist", "--fake-data", 16, "--batch-size", 8, "--epochs", 1, "--seed", 4294967295,
                "--outdir", tmp_path) == 0


@pytest.mark.parametrize("flags", [["--generate", 4], ["--resume", "--epochs", 3]])
def test_another_scripts_run_folder_is_named(runs, flags, mnist_root, capsys):
    outdir = runs["gan_mnist"]["b"]
    before = open(os.path.join(outdir, "checkpoint.pt"), "rb").read()
    assert call("dcgan_mnist", "--dataroot", mnist_root, "--outdir", outdir, *flags) == 1
    one_line_error(capsys, "this run was made by gan_mnist.py", outdir)
    assert open(os.path.join(outdir, "checkpoint.pt"), "rb").read() == before


@pytest.mark.parametrize("flags", [["--generate", 3], ["--resume", "--epochs", 2]])
def test_a_checkpoint_of_a_version_before_the_script_was_recorded_is_refused_in_words(flags, tmp_path, mnist_root,
                                                                                       capsys):
    """Checkpoints before 2026-11 did not record their script (nor image_shape, quality rows, ...);
    this version reads none of them, and says so instead of guessing."""
    args = ["--dataroot", mnist_root, "--batch-size", 16, "--outdir", tmp_path]
    assert call("gan_mnist", *args, "--epochs", 1) == 0
    ckpt = load(tmp_path)
    del ckpt["script"], ckpt["image_shape"]
    torch.save(ckpt, os.path.join(tmp_path, "checkpoint.pt"))
    before = open(tmp_path / "checkpoint.pt", "rb").read()
    capsys.readouterr()
    assert call("gan_mnist", *args, *flags) == 1
    one_line_error(capsys, "written by an earlier version", "--overwrite")
    assert open(tmp_path / "checkpoint.pt", "rb").read() == before


def test_interpolate_without_generate_is_refused(tmp_path, capsys):
    assert call("dcgan_mnist", "--fake-data", 16, "--outdir", tmp_path, "--interpolate") == 1
    one_line_error(capsys, "--interpolate", "--generate N")
    assert not os.path.exists(tmp_path / "checkpoint.pt")


def test_an_empty_checkpoint_is_described_in_words(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert call("gan_mnist", "--outdir", tmp_path, "--generate", 2) == 1
    err = one_line_error(capsys, "checkpoint.pt is empty (0 bytes")
    assert "()" not in err


def wait_until_training(p):
    for line in p.stdout:
        if line.startswith("epoch 1/"):
            return
    raise AssertionError(p.stderr.read())


def test_a_second_run_in_the_same_outdir_is_refused_while_the_first_trains(tmp_path, mnist_root, capsys):
    args = ["--dataroot", mnist_root, "--batch-size", 4, "--outdir", tmp_path]
    p = spawn("gan_mnist", *args, "--epochs", 10000, env={"PYTHONUNBUFFERED": "1"})
    try:
        wait_until_training(p)
        for flags in (["--epochs", 2], ["--overwrite", "--epochs", 2], ["--resume", "--epochs", 10000],
                      ["--generate", 4]):
            assert call("gan_mnist", *args, *flags) == 1, flags
            one_line_error(capsys, f"{tmp_path} is in use by another run (process {p.pid})")
        assert p.poll() is None  # the first run trains on, untouched
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=120)
    assert p.returncode == 143
    epoch = load(tmp_path)["epoch"]
    # the lock went with the process: the folder is free again
    assert call("gan_mnist", *args, "--resume", "--epochs", epoch + 1) == 0
    assert load(tmp_path)["epoch"] == epoch + 1


def test_kill_9_leaves_no_lock_behind(tmp_path, mnist_root):
    args = ["--dataroot", mnist_root, "--batch-size", 4, "--outdir", tmp_path]
    p = spawn("gan_mnist", *args, "--epochs", 10000, env={"PYTHONUNBUFFERED": "1"})
    wait_until_training(p)
    p.kill()
    p.communicate()
    assert open(tmp_path / ".lock").read() == str(p.pid)  # the file stays, its lock does not
    assert call("gan_mnist", *args, "--resume", "--epochs", load(tmp_path)["epoch"] + 1) == 0
