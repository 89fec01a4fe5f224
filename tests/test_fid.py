"""Faces measured by FID (common/fid.py), through torch-fidelity's real loading and FID code, with an
Inception weights file the test writes: random weights of the same network (the real file is 95 MB
and cannot be downloaded here). The measure's value is meaningless with them; its mechanics are not."""
import json
import os
import shutil

import pytest
import torch

from conftest import call, data_args, load, make_faces, run_sub

pytest.importorskip("torch_fidelity", reason="FID needs torch-fidelity (README: pip install torch-fidelity)")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A file of InceptionV3's keys and shapes as torch-fidelity has them, with random values (and
    BatchNorm's statistics taken from random images, so that the features differ between images)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True):  # (keep the random initial weights)
            pass

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pt")
    torch.manual_seed(0)
    net = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(folder / "empty.pt"))
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.momentum = None  # (the plain average of what it sees)
    with torch.no_grad():
        net.train()(torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8))
    torch.save(net.state_dict(), folder / "inception.pth")
    return folder / "inception.pth"


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory, weights):
    """dcgan_celeba on 6 faces of its own folder (its caches land beside them), 2 epochs measured
    every epoch by FID (Inception costs about a third of a second an image on 2 CPU cores)."""
    root = tmp_path_factory.mktemp("faces")
    make_faces(str(root / "img_align_celeba"), n=6)
    outdir = root / "run"
    args = data_args("dcgan_celeba", str(root), str(root)) + ["--epochs", 2, "--inception-weights", weights]
    assert call("dcgan_celeba", *args, "--eval-every", 1, "--outdir", outdir) == 0
    return root, outdir, args


def test_eval_every_measures_faces_by_fid_and_keeps_the_best(faces_run, capsys):
    root, outdir, _ = faces_run
    lines = open(outdir / "quality.csv").read().splitlines()
    assert lines[0] == "epoch,generator,FID,best"
    rows = load(outdir)["quality"]
    assert [(r["epoch"], r["generator"], r["n"], r["n_real"]) for r in rows] == [(1, "live", 6, 6), (2, "live", 6, 6)]
    best = min(rows, key=lambda r: r["FID"])
    kept = torch.load(outdir / "best.pt", weights_only=True)
    assert (kept["epoch"], kept["score"], kept["value"]) == (best["epoch"], "FID", best["FID"])
    assert len([f for f in os.listdir(root) if f.startswith("fid_stats_")]) == 1  # (beside the dataset)


def test_evaluate_uses_the_best_and_the_cached_real_statistics(faces_run, capsys):
    root, outdir, args = faces_run
    assert call("dcgan_celeba", *args, "--evaluate", 3, "--outdir", outdir) == 0
    out = capsys.readouterr().out
    assert "\nMeasuring the best generator" in out
    assert "FID " in out and "(3 generated against 3 real faces)" in out
    assert "Computed the real images' FID statistics" in out  # (3 real images: statistics of their own)
    first = json.load(open(outdir / "evaluation.json"))["FID"]
    assert first > 1  # (an untrained generator's samples are not faces, even to random features)
    assert call("dcgan_celeba", *args, "--evaluate", 3, "--outdir", outdir) == 0
    again = capsys.readouterr().out
    assert "Computed the real images' FID statistics" not in again  # (found in the cache)
    assert json.load(open(outdir / "evaluation.json"))["FID"] == first
    assert call("dcgan_celeba", *args, "--evaluate", 3, "--generator", "last", "--outdir", outdir) == 0
    assert "\nMeasuring the last generator" in capsys.readouterr().out


def test_without_the_weights_one_sentence_names_both_ways(faces_run, tmp_path):
    """No --inception-weights, an empty torch hub cache and a network that refuses (a proxy on a
    closed port, as behind a firewall): one sentence, no traceback, nothing downloaded."""
    root, outdir, args = faces_run
    args = args[:args.index("--inception-weights")] + args[args.index("--inception-weights") + 2:]
    env = {"TORCH_HOME": str(tmp_path / "torch"), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY":
           "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    code, out, err = run_sub("dcgan_celeba", *args, "--evaluate", 3, "--outdir", outdir, env=env)
    assert code != 0 and "Traceback" not in err, err
    assert "FID needs Inception's weights" in err and "--inception-weights PATH" in err
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert not any(files for _, _, files in os.walk(tmp_path / "torch"))


def test_a_crafted_weights_file_is_refused_before_it_runs(faces_run, tmp_path, capsys):
    """A pickle that would run code when loaded as torch-fidelity loads a path (weights_only=False)."""
    root, outdir, args = faces_run
    marker = tmp_path / "ran"

    class Crafted:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    torch.save({"Conv2d_1a_3x3.conv.weight": Crafted()}, tmp_path / "crafted.pth")
    at = args.index("--inception-weights") + 1
    args = args[:at] + [tmp_path / "crafted.pth"] + args[at + 1:]
    assert call("dcgan_celeba", *args, "--evaluate", 3, "--outdir", outdir) == 1
    assert "is not a file of plain tensors" in capsys.readouterr().err
    assert not marker.exists()


def test_other_weights_are_refused_in_one_sentence(faces_run, tmp_path, capsys):
    root, outdir, args = faces_run
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    at = args.index("--inception-weights") + 1
    args = args[:at] + [tmp_path / "other.pth"] + args[at + 1:]
    assert call("dcgan_celeba", *args, "--evaluate", 3, "--outdir", outdir) == 1
    assert "does not hold InceptionV3's weights" in capsys.readouterr().err


def test_changed_real_images_are_measured_again(faces_run, tmp_path, capsys):
    """The statistics' key follows the image folder (as the image cache's does): another set of faces
    is not measured against the first one's statistics."""
    root, outdir, args = faces_run
    other = tmp_path / "other"
    make_faces(str(other / "img_align_celeba"), n=6, seed=1)
    at = args.index("--dataroot") + 1
    args = args[:at] + [other] + args[at + 1:]
    shutil.copytree(outdir, tmp_path / "run")
    assert call("dcgan_celeba", *args, "--evaluate", 3, "--outdir", tmp_path / "run") == 0
    assert "Computed the real images' FID statistics" in capsys.readouterr().out
    assert len([f for f in os.listdir(other) if f.startswith("fid_stats_")]) == 1
