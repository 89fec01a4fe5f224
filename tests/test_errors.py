"""Issue: every mistake a user can make gets one clear sentence, a non-zero exit, no traceback,
and nothing already trained is lost."""
import errno
import os

import pytest
from PIL import Image

import common
from conftest import SCRIPTS, call, data_args, load, make_faces, make_mnist


def one_sentence_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("script,flag,value", [
    ("gan_mnist", "--epochs", "0"), ("dcgan_mnist", "--epochs", "-3"), ("dcgan_celeba", "--batch-size", "0"),
    ("dcgan_celeba", "--lr", "0"), ("gan_mnist", "--lr", "-1e-4"), ("dcgan_celeba", "--lr", "nan"),
    ("dcgan_celeba", "--nz", "0"), ("dcgan_celeba", "--ngf", "-1"), ("dcgan_celeba", "--ndf", "0"),
    ("gan_mnist", "--latent-size", "0"), ("dcgan_mnist", "--z-dim", "0"), ("gan_mnist", "--generate", "0"),
    ("dcgan_mnist", "--workers", "-1"), ("dcgan_celeba", "--ngpu", "-1"), ("dcgan_celeba", "--beta1", "1"),
    ("dcgan_celeba", "--beta1", "-0.1"), ("dcgan_mnist", "--beta1", "1.5"), ("gan_mnist", "--epochs", "two"),
    ("dcgan_celeba", "--image-size", "128"),
])
def test_bad_flags_are_argparse_errors_naming_the_flag(script, flag, value, capsys):
    assert call(script, flag, value) == 2
    one_sentence_error(capsys, f"argument {flag}")


def run_celeba(root, tmp_path, *extra):
    return call("dcgan_celeba", "--dataroot", root, "--outdir", tmp_path / "out", "--epochs", 1,
                "--batch-size", 4, "--ngf", 8, "--ndf", 8, "--workers", 0, *extra)


def test_celeba_dataroot_that_is_a_file(tmp_path, capsys):
    (tmp_path / "celeba.zip").write_bytes(b"PK")
    assert run_celeba(tmp_path / "celeba.zip", tmp_path) == 1
    one_sentence_error(capsys, "is a file, not a folder", "img_align_celeba")


def test_celeba_dataroot_empty(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_celeba(tmp_path / "empty", tmp_path) == 1
    one_sentence_error(capsys, "holds no images", "img_align_celeba.zip")


def test_celeba_folder_without_images(tmp_path, capsys):
    (tmp_path / "root" / "img_align_celeba").mkdir(parents=True)
    (tmp_path / "root" / "img_align_celeba" / "list_attr_celeba.txt").write_text("nothing")
    assert run_celeba(tmp_path / "root", tmp_path) == 1
    one_sentence_error(capsys, "holds no images")


def test_corrupt_and_truncated_jpegs_are_skipped_with_a_warning(tmp_path, capsys):
    folder = make_faces(str(tmp_path / "root" / "img_align_celeba"), n=6)
    (tmp_path / "root" / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg at all")
    good = (tmp_path / "root" / "img_align_celeba" / "000003.jpg").read_bytes()
    (tmp_path / "root" / "img_align_celeba" / "000003.jpg").write_bytes(good[:len(good) // 2])
    assert run_celeba(tmp_path / "root", tmp_path) == 0
    out = capsys.readouterr().out
    assert "skipped 2 image(s)" in out and "000002.jpg" in out and "000003.jpg" in out
    assert "4 training images" in out
    assert os.listdir(folder)  # nothing deleted


def test_grayscale_and_rgba_images_are_converted(tmp_path, capsys):
    make_faces(str(tmp_path / "root" / "img_align_celeba"), n=6, modes={1: "L", 2: "RGBA"})
    assert run_celeba(tmp_path / "root", tmp_path) == 0
    assert "6 training images" in capsys.readouterr().out


def test_mnist_absent_and_no_network(tmp_path, capsys, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):  # make sure nothing downloads
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    assert call("gan_mnist", "--dataroot", tmp_path / "data", "--outdir", tmp_path / "out") == 1
    err = one_sentence_error(capsys, "could not be downloaded", os.path.join("MNIST", "raw"),
                             "train-images-idx3-ubyte")
    assert len(err.strip().splitlines()) == 1


def test_mnist_truncated_file(tmp_path, capsys):
    root = make_mnist(str(tmp_path / "data"))
    path = os.path.join(root, "MNIST", "raw", "train-images-idx3-ubyte")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    assert call("dcgan_mnist", "--dataroot", root, "--outdir", tmp_path / "out") == 1
    one_sentence_error(capsys, "corrupt or truncated", "delete")


def test_missing_devices_fall_back_to_the_cpu_with_a_notice(tmp_path, mnist_root, celeba_root, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the fallback cannot be seen here")
    assert call("gan_mnist", "--dataroot", mnist_root, "--outdir", tmp_path / "a", "--epochs", 1,
                "--device", "cuda") == 0
    out = capsys.readouterr().out
    assert "--device cuda is not available" in out and "device: cpu" in out
    assert call("dcgan_celeba", *data_args("dcgan_celeba", mnist_root, celeba_root), "--outdir", tmp_path / "b",
                "--epochs", 1, "--ngpu", 4) == 0
    out = capsys.readouterr().out
    assert "--ngpu 4" in out and "device: cpu" in out


def test_outdir_that_is_a_file(tmp_path, mnist_root, capsys):
    (tmp_path / "out").write_text("x")
    assert call("gan_mnist", "--dataroot", mnist_root, "--outdir", tmp_path / "out") == 1
    one_sentence_error(capsys, "is a file")


def test_outdir_that_cannot_be_written(tmp_path, mnist_root, capsys):
    (tmp_path / "f").write_text("x")
    assert call("gan_mnist", "--dataroot", mnist_root, "--outdir", tmp_path / "f" / "out") == 1
    one_sentence_error(capsys, "is not writable")


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, mnist_root, capsys, monkeypatch):
    args = ["--dataroot", mnist_root, "--outdir", tmp_path, "--batch-size", 16]
    assert call("gan_mnist", *args, "--epochs", 1) == 0
    before = open(tmp_path / "checkpoint.pt", "rb").read()
    real_save = common.checkpoints.torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # write the bytes, then fail as a full disk does on flush
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(common.checkpoints.torch, "save", full_disk)
    capsys.readouterr()
    assert call("gan_mnist", *args, "--epochs", 2, "--resume") == 1
    one_sentence_error(capsys, "No space left on device", "previous checkpoint is intact")
    assert open(tmp_path / "checkpoint.pt", "rb").read() == before
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    monkeypatch.undo()
    assert call("gan_mnist", *args, "--epochs", 2, "--resume") == 0  # and it goes on once there is room


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_new_run_does_not_destroy_an_existing_one(runs, script, capsys, mnist_root, celeba_root):
    outdir = runs[script]["b"]
    before = open(os.path.join(outdir, "checkpoint.pt"), "rb").read()
    assert call(script, *data_args(script, mnist_root, celeba_root), "--outdir", outdir, "--epochs", 1) == 1
    one_sentence_error(capsys, "already holds a run", "--resume", "--overwrite")
    assert open(os.path.join(outdir, "checkpoint.pt"), "rb").read() == before


def test_overwrite_starts_over(tmp_path, mnist_root):
    args = ["--dataroot", mnist_root, "--outdir", tmp_path, "--batch-size", 16]
    assert call("gan_mnist", *args, "--epochs", 2) == 0
    assert call("gan_mnist", *args, "--epochs", 1, "--overwrite") == 0
    assert load(tmp_path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path / "samples")) == ["epoch_0000.png", "epoch_0001.png"]
    assert Image.open(tmp_path / "progress.gif").n_frames == 2


@pytest.mark.parametrize("flag", [["--resume"], ["--generate", "4"]])
def test_resume_or_generate_without_a_checkpoint(flag, tmp_path, mnist_root, capsys):
    assert call("dcgan_mnist", "--dataroot", mnist_root, "--outdir", tmp_path, *flag) == 1
    one_sentence_error(capsys, "no checkpoint.pt in")


def test_stream_stops_at_an_unreadable_image_with_one_sentence(tmp_path, capsys):
    make_faces(str(tmp_path / "root" / "img_align_celeba"), n=6)
    (tmp_path / "root" / "img_align_celeba" / "000004.jpg").write_bytes(b"not a jpeg at all")
    assert run_celeba(tmp_path / "root", tmp_path, "--stream") == 1
    err = one_sentence_error(capsys, "000004.jpg cannot be read", "without --stream")
    assert len(err.strip().splitlines()) == 1


def test_an_unreadable_image_in_a_dataloader_worker_is_still_one_sentence(tmp_path, capsys):
    import torch
    import torchvision.datasets as dset
    import torchvision.transforms as T
    make_faces(str(tmp_path / "root" / "img_align_celeba"), n=4)
    (tmp_path / "root" / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg at all")
    dataset = dset.ImageFolder(str(tmp_path / "root"), transform=T.ToTensor())
    loader = common.DataLoader(dataset, batch_size=1, num_workers=2, stream=True, device=torch.device("cpu"), seed=0)

    def main():
        for _ in loader:
            pass
    with pytest.raises(SystemExit) as stop:
        common.run_script(main)
    assert stop.value.code == 1
    err = one_sentence_error(capsys, "000002.jpg cannot be read", "without --stream")
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: /")
