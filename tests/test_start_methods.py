"""Workers started without fork (issue: Python 3.14 starts processes by forkserver on Linux, macOS
and Windows by spawn, and the DataLoader takes that default). Under each, set in the test through
multiprocessing (tests/faults.py --start-method): a Ctrl-C or a SIGTERM to the whole command
during the first decode stops cleanly and leaves nothing, the decode then gives fork's bits, so
does --stream, and a transform that cannot be pickled is one sentence."""
import glob
import multiprocessing
import os
import signal
import time

import pytest

from conftest import ROOT, assert_same, call, load, make_faces, spawn, spawn_code

METHODS = ["spawn", "forkserver"]
TINY = ["--epochs", 1, "--batch-size", 100, "--ngf", 4, "--ndf", 4]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """600 small faces: the first decode reads them with two workers (one per 256 images, at most
    one per core)."""
    root = str(tmp_path_factory.mktemp("faces"))
    make_faces(os.path.join(root, "img"), n=600, size=(32, 32))
    return root


def fresh(faces, tmp_path):
    """The faces as a folder of their own that no decode has cached yet (hard links: same files)."""
    copy = str(tmp_path / "faces")
    os.makedirs(os.path.join(copy, "img"))
    for name in os.listdir(os.path.join(faces, "img")):
        os.link(os.path.join(faces, "img", name), os.path.join(copy, "img", name))
    return copy


def run(method, *argv):
    p = spawn("dcgan_celeba", *argv, faults=("--start-method", method))
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def forked(faces, tmp_path_factory):
    """The first decode under fork (here, in this process): the bits the others must give."""
    outdir, default = str(tmp_path_factory.mktemp("fork")), multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("fork", force=True)
    try:
        assert call("dcgan_celeba", "--dataroot", fresh(faces, tmp_path_factory.mktemp("f")), "--outdir", outdir,
                    *TINY) == 0
    finally:
        multiprocessing.set_start_method(default, force=True)
    return outdir


@pytest.mark.parametrize("method", METHODS)
def test_stream_gives_forks_bits(forked, faces, tmp_path, method):
    """(The first decode's bits: after the Ctrl-C below.)"""
    out = run(method, "--dataroot", fresh(faces, tmp_path), "--outdir", tmp_path / "run", *TINY, "--stream",
              "--workers", 2)
    assert "Decoding" not in out
    assert_same(load(forked), load(tmp_path / "run"))


def in_group(pgid):
    """{pid: command line} of the live processes of process group pgid but its leader (a process
    that ended but was not yet reaped holds nothing: left out)."""
    found = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
            pid = int(stat.split("/")[2])
            if int(group) == pgid and pid != pgid and state != "Z":
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):  # (gone meanwhile)
            pass
    return found


def workers_started(pgid, method):
    """Whether the first decode's workers are there: spawn's (spawn_main), or forkserver's (forked
    by the server, with its command line: the server and one at least)."""
    lines = in_group(pgid).values()
    return any("spawn_main" in c for c in lines) if method == "spawn" else sum("forkserver" in c for c in lines) >= 2


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_during_the_first_decode_is_clean_and_leaves_nothing(forked, faces, tmp_path, method, signum, code):
    """Ctrl-C as a terminal sends it, and SIGTERM as a scheduler's stop sends it, to every process of
    the command (its process group), while the decode's workers start."""
    dataroot = fresh(faces, tmp_path)
    p = spawn("dcgan_celeba", "--dataroot", dataroot, "--outdir", tmp_path / "run", *TINY,
              faults=("--start-method", method), env={"PYTHONUNBUFFERED": "1"}, group=True)
    for line in p.stdout:
        if line.startswith("Decoding"):
            break
    deadline = time.monotonic() + 60
    while not workers_started(p.pid, method) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert workers_started(p.pid, method), in_group(p.pid)
    os.killpg(p.pid, signum)
    out, err = p.communicate(timeout=120)
    assert p.returncode == code and "Traceback" not in err, err[-3000:]
    assert "nothing was left unsaved" in err
    assert os.listdir(dataroot) == ["img"]  # no cache, no temporary
    assert not os.path.exists(tmp_path / "run")
    deadline = time.monotonic() + 10  # (the workers exit as the command's last act)
    while in_group(p.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert in_group(p.pid) == {}
    if signum == signal.SIGINT:  # the same command again: the first decode, as under fork
        assert "Decoding 600 images" in run(method, "--dataroot", dataroot, "--outdir", tmp_path / "run", *TINY)
        assert_same(load(forked), load(tmp_path / "run"))


@pytest.mark.parametrize("method", METHODS)
def test_a_transform_that_cannot_be_pickled_is_one_sentence_naming_workers_0(faces, tmp_path, method):
    """A learner's transforms.Lambda(lambda ...) in the tutorial's Compose, read by --workers 2."""
    p = spawn_code(f"""
import sys
sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, "tests")!r}]
import dcgan_celeba, faults
image_folder = dcgan_celeba.dset.ImageFolder
def with_a_lambda(root, transform):
    transform.transforms.insert(2, dcgan_celeba.transforms.Lambda(lambda image: image))
    return image_folder(root=root, transform=transform)
dcgan_celeba.dset.ImageFolder = with_a_lambda
faults.run("dcgan_celeba.py", {[str(a) for a in ["--dataroot", faces, "--outdir", tmp_path / "run", "--workers", 2,
                                                 *TINY]]!r}, ["--start-method", {method!r}])
""")
    out, err = p.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert p.returncode == 1 and "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("error: the dataset cannot be handed to the 2 processes that read its images: "
                               f"Python starts them by {method!r}, which sends each a pickled copy")
    assert "not as a lambda" in lines[0] and "--workers 0" in lines[0]
