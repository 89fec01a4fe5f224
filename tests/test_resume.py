"""Issue: exact resume from any moment, crash-safe checkpoints, safe loading."""
import importlib
import os
import signal
import time

import pytest
import torch

import common
from conftest import SCRIPTS, assert_same, call, data_args, load, same_files, spawn
from faults import faulty_iter


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("script", SCRIPTS)
def test_sigint_in_epoch_2_then_resume_ends_bit_for_bit_as_a_straight_run(
        runs, script, workers, tmp_path, mnist_root, celeba_root):
    args = data_args(script, mnist_root, celeba_root) + ["--checkpoint-every", "2", "--epochs", "2",
                                                          "--workers", workers, "--outdir", tmp_path]
    if workers:
        args.append("--stream")  # workers read the files: the tutorial's own data path
    # The process sends itself a real SIGINT as batch 1 of epoch 1 (the second epoch) begins.
    p = spawn(script, *args, faults=("--signal-at", "1:1/SIGINT"))
    out, err = p.communicate(timeout=240)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert "Stopped in epoch 2/2 after batch 2 of 3" in err and "--resume" in err.splitlines()[-1]
    ckpt = load(tmp_path)
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 2)
    assert call(script, *args, "--resume") == 0
    straight = runs[script]["a"]
    assert_same(load(straight), load(tmp_path))
    assert same_files(straight, tmp_path, "history.csv")
    assert same_files(straight, tmp_path, os.path.join("samples", "epoch_0002.png"))


def test_sigterm_from_outside_saves_and_resumes(tmp_path, mnist_root):
    args = ["--dataroot", mnist_root, "--batch-size", "4", "--epochs", "10000", "--outdir", tmp_path]
    p = spawn("gan_mnist", *args, env={"PYTHONUNBUFFERED": "1"})
    for line in p.stdout:  # wait until training runs
        if line.startswith("epoch 2/"):
            break
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "Traceback" not in err and "Continue with:" in err
    ckpt = load(tmp_path)
    assert ckpt["epoch"] >= 2
    epochs = ckpt["epoch"] + (2 if ckpt["iteration"] else 1)
    assert call("gan_mnist", *args[:-4], "--epochs", epochs, "--outdir", tmp_path, "--resume") == 0
    assert load(tmp_path)["epoch"] == epochs


def test_kill_9_leaves_a_complete_checkpoint(tmp_path, mnist_root):
    args = ["--dataroot", mnist_root, "--batch-size", "4", "--epochs", "10000", "--checkpoint-every", "1",
            "--outdir", tmp_path]
    p = spawn("gan_mnist", *args, env={"PYTHONUNBUFFERED": "1"})
    for line in p.stdout:
        if line.startswith("epoch 3/"):
            break
    time.sleep(0.3)  # somewhere in the middle of writing checkpoints every iteration
    p.kill()
    p.communicate()
    ckpt = load(tmp_path)  # loads: complete, not torn
    assert ckpt["epoch"] >= 2
    assert call("gan_mnist", *args[:-6], "--epochs", ckpt["epoch"] + 1, "--outdir", tmp_path, "--resume") == 0


def test_truncated_checkpoint_falls_back_to_the_older_copy(tmp_path, mnist_root, capsys):
    args = ["--dataroot", mnist_root, "--batch-size", "16", "--outdir", tmp_path]
    assert call("dcgan_mnist", *args, "--epochs", 2) == 0
    path = os.path.join(tmp_path, "checkpoint.pt")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 3])
    capsys.readouterr()
    assert call("dcgan_mnist", *args, "--epochs", 3, "--resume") == 0
    out = capsys.readouterr().out
    assert f"{path} is truncated" in out and "checkpoint.prev.pt" in out
    assert load(tmp_path)["epoch"] == 3
    assert os.path.exists(path + ".corrupt")  # nothing is thrown away


def test_truncated_checkpoint_without_an_older_copy_is_a_clear_error(tmp_path, mnist_root, capsys):
    args = ["--dataroot", mnist_root, "--batch-size", "16", "--outdir", tmp_path]
    assert call("gan_mnist", *args, "--epochs", 1) == 0
    path = os.path.join(tmp_path, "checkpoint.pt")
    assert not os.path.exists(os.path.join(tmp_path, "checkpoint.prev.pt"))  # one save: no older copy
    open(path, "wb").write(open(path, "rb").read()[:100])
    assert call("gan_mnist", *args, "--epochs", 2, "--resume") == 1
    err = capsys.readouterr().err
    assert path in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_changed_settings_are_listed_and_refused(tmp_path, mnist_root, capsys):
    args = ["--dataroot", mnist_root, "--outdir", tmp_path, "--batch-size", "16"]
    assert call("gan_mnist", *args, "--epochs", 1) == 0
    before = open(os.path.join(tmp_path, "checkpoint.pt"), "rb").read()
    capsys.readouterr()
    assert call("gan_mnist", *args, "--epochs", 2, "--resume", "--lr", "0.001") == 1
    err = capsys.readouterr().err
    assert "lr: 0.0002 -> 0.001" in err and "Traceback" not in err
    assert call("gan_mnist", *args[:-2], "--batch-size", "8", "--epochs", 2, "--resume", "--seed", 1) == 1
    err = capsys.readouterr().err
    assert "batch_size: 16 -> 8" in err and "seed: 42 -> 1" in err
    assert open(os.path.join(tmp_path, "checkpoint.pt"), "rb").read() == before
    # settings that do not change the math are accepted
    assert call("gan_mnist", *args, "--epochs", 2, "--resume", "--workers", 1, "--checkpoint-every", 7) == 0


@pytest.mark.parametrize("script", SCRIPTS)
def test_resume_of_a_finished_run_says_so_and_exits_0(script, tmp_path, mnist_root, celeba_root, capsys):
    args = data_args(script, mnist_root, celeba_root) + ["--outdir", tmp_path, "--epochs", 1]
    assert call(script, *args) == 0
    def written():  # the .lock file records which process uses the folder: it changes with every command
        return {f: os.path.getmtime(os.path.join(tmp_path, f)) for f in os.listdir(tmp_path) if f != ".lock"}
    before = written()
    capsys.readouterr()
    assert call(script, *args, "--resume") == 0
    assert "already trained 1 epoch (--epochs 1)" in capsys.readouterr().out
    assert before == written() and len(before) >= 7


@pytest.mark.parametrize("script", SCRIPTS)
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(script, tmp_path, mnist_root, celeba_root,
                                                             capsys, monkeypatch):
    args = data_args(script, mnist_root, celeba_root) + ["--outdir", tmp_path, "--epochs", 3,
                                                          "--checkpoint-every", 2]
    monkeypatch.setattr(common.DataLoader, "__iter__", faulty_iter(nan_at="1:1"))
    assert call(script, *args) == 3
    err = capsys.readouterr().err
    assert "NaN" in err and "in batch 2 of 3 of epoch 2/3" in err and "Traceback" not in err
    ckpt = load(tmp_path)
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 1)  # the periodic save just before the NaN
    for name in ("netG", "netD"):
        assert all(torch.isfinite(t).all() for t in ckpt[name].values() if t.is_floating_point())


def test_checkpoint_holds_only_plain_data_and_loads_with_weights_only(runs):
    ckpt = torch.load(os.path.join(runs["dcgan_celeba"]["a"], "checkpoint.pt"), weights_only=True)

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (torch.Tensor, int, float, str, bool, bytes))
    assert plain(ckpt)
    assert isinstance(ckpt["rng"][0]["torch"], torch.Tensor)


def test_a_setting_added_since_a_run_was_saved_counts_at_its_default(tmp_path, mnist_root, capsys):
    """A flag added to a script after a run was saved (simulated: its key removed from the saved
    settings) lets that run resume at the flag's default, and is refused, by name, at another value."""
    args = ["--dataroot", mnist_root, "--batch-size", "16", "--outdir", tmp_path]
    assert call("gan_mnist", *args, "--epochs", 1) == 0
    ckpt = load(tmp_path)
    del ckpt["settings"]["hidden_size"], ckpt["settings"]["amp"]
    torch.save(ckpt, os.path.join(tmp_path, "checkpoint.pt"))
    capsys.readouterr()
    assert call("gan_mnist", *args, "--epochs", 2, "--resume", "--hidden-size", 128) == 1
    err = capsys.readouterr().err
    assert "hidden_size: 256 -> 128" in err and "amp" not in err and "Traceback" not in err
    assert call("gan_mnist", *args, "--epochs", 2, "--resume") == 0
    assert call("gan_mnist", *args[:-1], tmp_path / "straight", "--epochs", 2) == 0
    resumed, straight = load(tmp_path), load(tmp_path / "straight")
    for key in ("netG", "netD", "optimizerG", "optimizerD", "history", "fixed_noise", "rng"):
        assert_same(resumed[key], straight[key], key)


def test_flags_that_do_not_change_the_math_are_marked_where_they_are_made():
    """The rule lives on the flag: every flag changes the math unless made with changes_math=False."""
    gan = importlib.import_module("gan_mnist")
    celeba = importlib.import_module("dcgan_celeba")
    math = set(gan.parse_args([]).math_defaults)
    assert {"batch_size", "seed", "lr", "latent_size", "hidden_size", "amp", "fake_data"} <= math
    assert not {"epochs", "workers", "device", "outdir", "dataroot", "stream", "resume", "eval_every"} & math
    assert "ngpu" not in celeba.parse_args([]).math_defaults  # DataParallel's real GPU count is recorded instead
    parser = common.ArgumentParser()
    parser.add_argument("--loss", default="bce")
    parser.add_argument("--tensorboard", action="store_true", changes_math=False)
    assert parser.parse_args([]).math_defaults == {"loss": "bce"}
