"""Issue: each file a run writes is declared once (common/outdir.py OUTPUTS), and what follows from
the declaration holds: every command writes only declared names, --overwrite deletes all of them,
a claim removes their temporaries, README lists them; and the commands that sample a run work on a
run folder older than a flag."""
import errno
import os
import re
import shutil

import pytest
import torch

import common
from common.outdir import CACHES, LOCK, OUTPUTS, matches
from conftest import ROOT, call, data_args, load


def written(folder):
    """Every file under folder, as a path relative to it."""
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files)


def undeclared(folder):
    return [f for f in written(folder) if f != LOCK and not any(matches(n, f) for n in {**OUTPUTS, **CACHES})]


def example(declared):
    """A name that the declared name stands for."""
    return declared.replace("<n>", "0001").replace("<key>", "64px_0123456789abcdef")


@pytest.fixture(scope="module")
def every_output(tmp_path_factory, mnist_root, celeba_root):
    """Two folders that hold everything the commands write: an MNIST run measured during training,
    sampled, walked and evaluated; a CelebA run whose image cache lands in --outdir, with its real
    images exported and sampled, and a checkpoint that --resume found unreadable."""
    base = tmp_path_factory.mktemp("outputs")
    mnist, celeba = str(base / "mnist"), str(base / "celeba")
    args = data_args("dcgan_mnist", mnist_root, celeba_root) + ["--outdir", mnist]
    assert call("dcgan_mnist", *args, "--epochs", 2, "--eval-every", 1) == 0
    assert call("dcgan_mnist", *args, "--generate", 3, "--interpolate") == 0
    assert call("dcgan_mnist", *args, "--evaluate", 20) == 0
    faces = str(base / "faces")
    shutil.copytree(os.path.join(celeba_root, "img_align_celeba"), os.path.join(faces, "img_align_celeba"))
    real_save = common.data.atomic_save

    def read_only_dataset(obj, path):  # (as for a user whose dataset's folder is not theirs; root may write anywhere)
        if path.startswith(faces):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        real_save(obj, path)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(common.data, "atomic_save", read_only_dataset)
    try:
        args = data_args("dcgan_celeba", mnist_root, faces) + ["--outdir", celeba]
        assert call("dcgan_celeba", *args, "--epochs", 1) == 0
        assert call("dcgan_celeba", *args, "--export-real", 4) == 0
        assert call("dcgan_celeba", *args, "--generate", 4) == 0
        path = os.path.join(celeba, "checkpoint.pt")  # and what --resume leaves of an unreadable checkpoint
        assert call("dcgan_celeba", *args, "--epochs", 2, "--resume") == 0
        open(path, "wb").write(open(path, "rb").read()[:1000])
        assert call("dcgan_celeba", *args, "--epochs", 3, "--resume") == 0
    finally:
        monkeypatch.undo()
    return mnist, celeba


def test_every_file_the_commands_write_is_declared(every_output):
    mnist, celeba = every_output
    for folder in every_output:
        assert undeclared(folder) == []
    seen = written(mnist) + written(celeba)
    assert any(matches("image_cache_<key>.pt", f) for f in written(celeba))
    for name in ("quality.csv", "evaluation.json", "generated/interpolation.gif", "real/00000.png",
                 "checkpoint.pt.corrupt", "training_images.png", "real_images.png"):
        assert name in seen, name


def test_a_name_that_is_not_declared_is_refused_where_it_is_written(tmp_path):
    with pytest.raises(ValueError, match="not declared in common/outdir.py OUTPUTS"):
        common.outdir.output(str(tmp_path), "samples/notes.png")
    assert common.outdir.output(str(tmp_path), "samples/epoch_0012.png") == str(tmp_path / "samples" / "epoch_0012.png")


def test_overwrite_deletes_every_declared_output_of_the_old_run(every_output, mnist_root, celeba_root, tmp_path):
    mnist, _ = every_output
    args = data_args("dcgan_mnist", mnist_root, celeba_root) + ["--epochs", 1]
    assert call("dcgan_mnist", *args, "--outdir", tmp_path) == 0  # what a new run writes
    assert call("dcgan_mnist", *args, "--outdir", mnist, "--overwrite") == 0
    assert written(mnist) == [f for f in written(tmp_path) if not f.startswith("MNIST")]


def test_a_claim_removes_the_temporaries_of_every_declared_output(tmp_path):
    temporaries = []
    for declared in OUTPUTS:
        path = tmp_path / (example(declared) + ".tmp4000000")  # (a process number no process has)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half written")
        temporaries.append(path)
    (tmp_path / "notes.txt.tmp4000000").write_text("mine")  # not a name of ours: stays
    with common.outdir.claim(str(tmp_path)):
        pass
    assert [p for p in temporaries if p.exists()] == [] and (tmp_path / "notes.txt.tmp4000000").exists()


def test_readme_lists_every_declared_output():
    readme = open(os.path.join(ROOT, "README.md")).read()
    table = readme.split("## What lands in --outdir")[1].split("\n## ")[0]
    listed = set(re.findall(r"^\| `([^`]+)`", table, re.M))
    assert set(OUTPUTS) | set(CACHES) | {LOCK} == listed


def test_sampling_a_run_folder_older_than_a_flag_uses_the_flags_default(tmp_path, mnist_root, celeba_root, capsys):
    """A run saved before a flag existed ran at its default: --generate, --interpolate and --evaluate
    build its generator with that default (here the saved settings lose hidden_size, and ngf)."""
    args = data_args("gan_mnist", mnist_root, celeba_root) + ["--outdir", tmp_path / "mnist"]
    assert call("gan_mnist", *args, "--epochs", 1) == 0
    celeba = data_args("dcgan_celeba", mnist_root, celeba_root)
    celeba[celeba.index("--ngf") + 1] = 64  # (the default: a run older than --ngf was made at it)
    assert call("dcgan_celeba", *celeba, "--epochs", 1, "--outdir", tmp_path / "celeba") == 0
    for script, folder, key in (("gan_mnist", "mnist", "hidden_size"), ("dcgan_celeba", "celeba", "ngf")):
        ckpt = load(tmp_path / folder)
        del ckpt["settings"][key]
        torch.save(ckpt, tmp_path / folder / "checkpoint.pt")
        assert call(script, "--outdir", tmp_path / folder, "--generate", 3, "--interpolate") == 0
    assert call("gan_mnist", *args, "--evaluate", 20) == 0
    assert "Traceback" not in capsys.readouterr().err
