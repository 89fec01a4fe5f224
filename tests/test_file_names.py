"""File names that are not UTF-8 (issue: a folder of faces copied from an old archive, its names in
Latin-1). Linux file names are bytes; Python hands such a name to the program as a string with
surrogate escapes. The files here are real, written through bytes paths (os.fsencode)."""
import os
import subprocess

import common.data
from conftest import assert_same, call, load, make_faces, spawn

FACES = [b"caf\xe9.jpg", b"na\xefve.jpg", b"\xfcber.jpg"]  # café, naïve, über in Latin-1: not UTF-8


def latin1(folder, name):
    """The path of `name` (Latin-1 bytes) in folder, as Python gives it to the program."""
    return os.fsdecode(os.path.join(os.fsencode(folder), name))


def escaped(name):
    """A name (bytes, or a str as Python holds it) as the scripts print it: caf\\xe9.jpg."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def faces_with_latin1_names(root, n=24):
    """n faces in root/img, the last of them renamed caf\\xe9.jpg, and an unreadable na\\xefve.jpg."""
    folder = os.path.join(root, "img")
    make_faces(folder, n=n, size=(32, 32))
    os.rename(os.path.join(folder, f"{n:06d}.jpg"), latin1(folder, FACES[0]))
    with open(latin1(folder, FACES[1]), "wb") as f:
        f.write(b"not a JPEG")
    return folder


def test_a_folder_named_in_latin1_trains_caches_resumes_and_says_what_changed(tmp_path, capsys):
    dataroot, outdir = latin1(tmp_path, b"f\xe4ces"), latin1(tmp_path, b"r\xe9sultats")
    folder = faces_with_latin1_names(dataroot)
    assert "\udce4" in dataroot and escaped(dataroot).endswith("/f\\xe4ces")
    args = ["--dataroot", dataroot, "--outdir", outdir, "--batch-size", 8, "--ngf", 4, "--ndf", 4, "--workers", 0]
    assert call("dcgan_celeba", *args, "--epochs", 1) == 0
    out, err = capsys.readouterr()
    assert f"could not be read: img/{escaped(FACES[1])}" in out  # (the warning names it, readably)
    assert f"Cached them in {escaped(dataroot)}/image_cache_64px_" in out
    assert f"Outputs in {escaped(outdir)}/" in out and "Traceback" not in err
    assert len([f for f in os.listdir(os.fsencode(dataroot)) if f.startswith(b"image_cache_")]) == 1

    # the same images under UTF-8 names (in the same order) train the same bits
    utf8 = str(tmp_path / "utf8")
    os.makedirs(os.path.join(utf8, "img"))
    for name in os.listdir(os.fsencode(folder)):
        with open(os.path.join(os.fsencode(folder), name), "rb") as f:
            data = f.read()
        with open(os.path.join(utf8, "img", name.decode("latin-1")), "wb") as f:
            f.write(data)
    assert call("dcgan_celeba", "--dataroot", utf8, "--outdir", tmp_path / "utf8-run", *args[4:], "--epochs", 1) == 0
    assert "could not be read: img/na\xefve.jpg" in capsys.readouterr().out  # (UTF-8: as it is)
    for net in ("netG", "netD", "optimizerG", "optimizerD"):
        assert_same(load(outdir)[net], load(tmp_path / "utf8-run")[net])

    # the next start finds the cache again, and --resume recognises the folder
    assert call("dcgan_celeba", *args, "--epochs", 2, "--resume") == 0
    out = capsys.readouterr().out
    assert f"Loaded 24 decoded images from {escaped(dataroot)}/image_cache_64px_" in out
    assert "Resuming after epoch 1/2" in out and load(outdir)["epoch"] == 2

    # a changed folder is described in words, the new name readable
    os.link(os.path.join(folder, "000001.jpg"), latin1(folder, FACES[2]))
    assert call("dcgan_celeba", *args, "--epochs", 3, "--resume") == 1
    err = capsys.readouterr().err
    assert f"the image folder differs from the run's: 1 image added (img/{escaped(FACES[2])})" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_dataroot_named_in_latin1_that_does_not_exist_is_one_readable_sentence(tmp_path, capsys):
    missing = latin1(tmp_path, b"f\xe4ces")
    assert call("dcgan_celeba", "--dataroot", missing, "--outdir", tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert f"--dataroot {escaped(missing)} does not exist" in err and "Traceback" not in err


def test_utf8_names_keep_their_cache_keys():
    """The keys hash the OS's bytes now; for UTF-8 names those are the bytes str.encode() gave, so
    caches and runs made before stay valid: the keys below are those the code of a5e53f6 gave."""
    files = ["img/000001.jpg", "img/caf\xe9.jpg"]  # (é as UTF-8 on disk)
    stats = [os.stat_result((0o100644, 0, 0, 1, 0, 0, 1000 + k, 0, 0, 0, 0.0, 0.0, 0.0, 0,
                             1_700_000_000_000_000_000 + k, 0)) for k in range(2)]  # (sizes, st_mtime_ns)
    resize = [common.data.transforms.Resize(64), common.data.transforms.CenterCrop(64)]
    assert common.data.cache_name(resize, files, stats) == "image_cache_64px_7a06e95cf9b257d2.pt"
    assert common.data.data_id(None, folder=(files, stats)) == "images-0bffdb4b5d5a0351"


def test_a_stopped_run_in_a_latin1_outdir_says_a_command_that_continues_it(tmp_path):
    """Ctrl-C (a real signal, in a process of its own): the "Continue with:" command, pasted into
    bash, gives the folder's own bytes back, and resumes the run."""
    dataroot, outdir = latin1(tmp_path, b"f\xe4ces"), latin1(tmp_path, b"r\xe9sultats")
    faces_with_latin1_names(dataroot)
    args = ["--dataroot", dataroot, "--outdir", outdir, "--batch-size", 8, "--ngf", 4, "--ndf", 4, "--workers", 0,
            "--epochs", 2]
    p = spawn("dcgan_celeba", *args, faults=("--signal-at", "0:1/SIGINT"))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err[-3000:]
    command = err.split("Continue with: ")[1].splitlines()[0]
    assert f"$'{escaped(outdir)}'" in command
    words = subprocess.run(["bash", "-c", 'printf "%s\\0" ' + command], capture_output=True, check=True).stdout
    words = words.split(b"\0")[:-1]
    assert words[words.index(b"--outdir") + 1] == os.fsencode(outdir) and words[-1] == b"--resume"
    assert call("dcgan_celeba", *[os.fsdecode(w) for w in words[words.index(b"--dataroot"):]]) == 0
    assert load(outdir)["epoch"] == 2
