"""The rehearsal: every command at the size its users run it, on this machine, under a desktop's
limit of 1,024 open files (`ulimit -n 1024`), and one table of what it took.

    python benchmarks/rehearsal.py --faces /data/faces --mnist /data/mnist-60k --workdir /tmp/rehearsal

  --faces    a folder for 202,599 synthetic 178x218 JPEG faces of about aligned CelebA's file size
             (its 32 real faces in ../shared average 7.2 KB), made once on every core and reused
  --mnist    a folder for 60,000 synthetic digits written as MNIST's training files (MNIST/raw/),
             made once; a folder that already holds MNIST's files is used as it is
  --only     celeba, gan_mnist, dcgan_mnist (default: all three)

dcgan_celeba.py at the tutorial's settings (batch 128, 5 epochs, 2 workers; --ngpu 0: this machine
has no GPU): the decoding floor (every file opened, decoded, resized and cropped by PIL on every
core, as the first start's decode does), the first start (decode and cache write), the second start
(the cache loaded), then --train-minutes of training inside the first epoch (the time of each
drawing and each --checkpoint-every save, the run ETA at minutes 1 and 5 against the run's length
projected from the pace measured over all those minutes, drawings and saves included), a SIGINT
after the mid-epoch save and --resume from it, --stream for --stream-minutes, --generate 50000.
gan_mnist.py --epochs 300 on the 60,000 digits: the whole run. dcgan_mnist.py, 5 epochs.

The scripts run as a user runs them, each in a process of its own; this file starts them through
its --child mode, which only adds timing lines ("@@ ...") for what the table needs: each drawing,
each checkpoint's write, and the progress bar's ETA (which a log file does not show) every few
seconds. Peak RSS is the process's own (os.wait4; a process still running: /proc's VmHWM).
"""
import argparse
import glob
import os
import re
import resource
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]
from synthetic import make_digits, make_faces  # noqa: E402

FACES, DIGITS = 202_599, 60_000
OPEN_FILES = 1024  # a desktop's usual `ulimit -n`


# ---------------------------------------------------------------------------------------------
# The data, made once
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# The floor of the first start: PIL on every core
# ---------------------------------------------------------------------------------------------

def decode_one(path):
    import numpy as np
    import torchvision.transforms as T
    from PIL import Image
    with open(path, "rb") as f:
        image = Image.open(f).convert("RGB")
    return np.asarray(T.CenterCrop(64)(T.Resize(64)(image))).shape


def decoding_floor(folder):
    """Seconds to open, decode, resize and crop every image with PIL on every core (no cache, no
    tensors): what no first start can beat."""
    from multiprocessing import Pool
    import torchvision.transforms  # noqa: F401 (imported once, before the pool's processes fork)
    files = sorted(glob.glob(os.path.join(folder, "*", "*.jpg")))
    started = time.monotonic()
    with Pool() as pool:
        for _ in pool.imap_unordered(decode_one, files, chunksize=256):
            pass
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# --child: a script as the user runs it, with timing lines for the table
# ---------------------------------------------------------------------------------------------

def child(script, argv):
    """The script run as `python script argv` would run it, with the debug lines of common's logger
    (each drawing, each save, the run ETA every 5 s) on stderr, each with the time it was said."""
    import logging
    import runpy

    class Stamped(logging.Formatter):
        def format(self, record):
            return f"@@ {record.getMessage()} t={time.monotonic():.3f}"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Stamped())
    logger = logging.getLogger("common")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    sys.argv = [script, *argv]
    sys.path.insert(0, ROOT)
    runpy.run_path(os.path.join(ROOT, script), run_name="__main__")


# What the debug lines say, each read into (kind, [its numbers])
MARKS = {"draw": r"drew the pictures in ([\d.]+) s \((\d+) rows",
         "save": r"saved checkpoint.pt in ([\d.]+) s \(epoch (\d+), iteration (\d+)\)",
         "batch": r"(\d+) batches done; run ETA ([\d.]+) s"}


# ---------------------------------------------------------------------------------------------
# The parent: start, watch, stop, measure
# ---------------------------------------------------------------------------------------------

class Command:
    """One script, started through --child under `ulimit -n 1024`; its lines are read as they come."""

    def __init__(self, script, *argv, log):
        self.started = time.monotonic()
        self.lines, self.marks, self.log = [], [], log
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", script, *map(str, argv)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                        (OPEN_FILES, OPEN_FILES)),
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.log.write(f"\n$ (ulimit -n {OPEN_FILES}) python {script} {' '.join(map(str, argv))}\n")

    def read_until(self, test, seconds=None):
        """Read lines until test(line) is true (returns that line) or `seconds` have passed since the
        start (returns None) or the process ends (returns None)."""
        for line in self.p.stdout:
            self.lines.append(line)
            self.log.write(line)
            if line.startswith("@@ "):
                for kind, pattern in MARKS.items():
                    said = re.search(pattern, line)
                    if said:
                        self.marks.append((kind, list(said.groups()), float(line.rsplit("t=", 1)[1])))
            if test(line):
                return line
            if seconds is not None and time.monotonic() - self.started > seconds:
                return None
        return None

    def peak_rss_now(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read())[1]) / 1024

    def finish(self, signum=None):
        """(exit code, peak RSS in MiB): signum first, if given, then read to the end."""
        if signum:
            self.p.send_signal(signum)
        self.read_until(lambda line: False)
        _, status, usage = os.wait4(self.p.pid, 0)
        self.p.returncode = os.waitstatus_to_exitcode(status)
        self.wall = time.monotonic() - self.started
        return self.p.returncode, usage.ru_maxrss / 1024

    def text(self):
        return "".join(self.lines)

    def marked(self, kind):
        return [(words, t) for k, words, t in self.marks if k == kind]


def celeba(args, rows, log):
    faces, work = args.faces, os.path.join(args.workdir, "dcgan_celeba")
    make_faces(faces, FACES)
    for old in glob.glob(os.path.join(faces, "image_cache_*.pt")):
        os.remove(old)  # the first start decodes
    tutorial = ["--dataroot", faces, "--ngpu", 0, "--workers", 2, "--epochs", 5, "--overwrite"]
    floor = decoding_floor(faces)
    rows.append(("decoding floor", f"{FACES} faces opened, decoded, resized and cropped by PIL on {os.cpu_count()} "
                                   f"cores: {floor:.1f} s ({FACES / floor:.0f} images/s)"))

    first = Command("dcgan_celeba.py", *tutorial, "--outdir", work, log=log)
    first.read_until(lambda line: line.startswith("Starting Training Loop"))
    to_train = time.monotonic() - first.started
    code, rss = first.finish(signal.SIGINT)
    text = first.text()
    decoded = re.search(r"Decoded them in ([\d.]+) s", text)
    cached = re.search(r"Cached them in (\S+) \(([\d.]+) GiB, ([\d.]+) s\)", text)
    rows.append(("first start (decode, cache write)",
                 f"{to_train:.1f} s to the first iteration, of which decoding {decoded[1] if decoded else '?'} s "
                 f"({float(decoded[1]) / floor:.2f}x the floor) and the cache write {cached[3] if cached else '?'} s; "
                 f"cache {cached[2] if cached else '?'} GiB; peak RSS {rss:.0f} MiB; exit {code} (SIGINT once "
                 f"training began)" if decoded else f"no decode line (exit {code})"))

    second = Command("dcgan_celeba.py", *tutorial, "--outdir", work, log=log)
    second.read_until(lambda line: line.startswith("Starting Training Loop"))
    to_train, start_rss = time.monotonic() - second.started, second.peak_rss_now()
    loaded = re.search(r"Loaded .* in ([\d.]+) s", second.text())
    rows.append(("second start (cache load)", f"{to_train:.1f} s to the first iteration, of which loading the cache "
                                              f"{loaded[1] if loaded else '?'} s; peak RSS {start_rss:.0f} MiB"))
    def enough(line):  # at least --train-minutes of training, and past a --checkpoint-every save (iteration 500)
        batches = second.marked("batch")
        return batches and second.marked("save") and time.monotonic() - batches[0][1] >= 60 * args.train_minutes
    second.read_until(enough)
    code, rss = second.finish(signal.SIGINT)
    stopped = re.search(r"Stopped in epoch 1/5 after batch (\d+) of (\d+)", second.text())
    training(rows, second, batches_per_epoch=int(stopped[2]) if stopped else 1583, epochs=5)
    rows.append(("SIGINT after the mid-epoch save", f"exit {code}; {stopped[0] if stopped else 'no stop line'}; "
                                                    f"peak RSS {rss:.0f} MiB"))

    resumed = Command("dcgan_celeba.py", *tutorial[:-1], "--outdir", work, "--resume", log=log)
    line = resumed.read_until(lambda line: line.startswith("Resuming"))
    resumed.read_until(lambda line: line.startswith("@@ ") and re.search(MARKS["batch"], line) is not None
                       and int(re.search(MARKS["batch"], line)[1]) >= 3)
    code, _ = resumed.finish(signal.SIGINT)
    again = re.search(r"Stopped in epoch 1/5 after batch (\d+)", resumed.text())
    same = stopped and line and f"after batch {stopped[1]} of" in line
    rows.append(("--resume", f"{line.strip() if line else 'no resume line'} ({'the batch it stopped after' if same else 'NOT where it stopped'}); "
                             f"{again[0] if again else 'no stop line'} after a few batches; exit {code}"))

    stream = Command("dcgan_celeba.py", *tutorial, "--outdir", os.path.join(args.workdir, "stream"), "--stream",
                     log=log)
    stream.read_until(lambda line: False, seconds=60 * args.stream_minutes)
    stream.finish(signal.SIGINT)
    batches = stream.marked("batch")
    steady = [(int(w[0]), t) for w, t in batches if t - batches[0][1] >= 30] if batches else []
    rate = 128 * (steady[-1][0] - steady[0][0]) / (steady[-1][1] - steady[0][1]) if len(steady) > 1 else 0
    rows.append(("--stream", f"{rate:.0f} images/s (from its second half-minute to minute {args.stream_minutes}), "
                             f"{rate / max(rows_rate(rows), 1e-9):.2f}x the in-memory path"))

    gen = Command("dcgan_celeba.py", "--outdir", work, "--generate", 50000, log=log)
    code, rss = gen.finish()
    rows.append(("--generate 50000", f"{gen.wall:.1f} s, peak RSS {rss:.0f} MiB, exit {code}"))


def rows_rate(rows):
    return next((float(re.search(r"([\d.]+) images/s", v)[1]) for k, v in rows if k == "training (in memory)"), 0)


def training(rows, command, batches_per_epoch, epochs):
    """Images/s, drawings, saves and the ETA of a run watched for some minutes inside its first epoch."""
    batches = [(int(w[0]), float(w[1]), t) for w, t in command.marked("batch")]
    (b0, _, t0), (b1, _, t1) = batches[0], batches[-1]
    pace = (t1 - t0) / (b1 - b0)  # seconds a batch, drawings and saves included
    rows.append(("training (in memory)", f"{128 / pace:.0f} images/s over {(t1 - t0) / 60:.1f} minutes "
                                         f"({b1 - b0} batches after the first)"))
    draws = [float(w[0]) for w, _ in command.marked("draw")]
    saves = [(float(w[0]), w[1:]) for w, _ in command.marked("save")]
    rows.append(("drawings", f"{len(draws)}: " + ", ".join(f"{d:.2f}" for d in draws[:3]) +
                 (f" ... {draws[-1]:.2f}" if len(draws) > 3 else "") + f" s (every {30} s: "
                 f"{100 * max(draws, default=0) / 30:.1f} % of the interval at most)"))
    rows.append(("checkpoint saves", ", ".join(f"{s:.2f} s (epoch {e}, iteration {i})" for s, (e, i) in saves)))
    total = epochs * batches_per_epoch
    for minute in (1, 5):
        at = next(((b, eta, t) for b, eta, t in batches if t - t0 >= 60 * minute), None)
        if at:
            b, eta, t = at
            real = (total - b) * pace
            rows.append((f"run ETA at minute {minute}", f"{eta / 3600:.2f} h printed; {real / 3600:.2f} h projected "
                                                        f"(batches left x the measured pace): {eta / real - 1:+.1%}"))


def gan_mnist(args, rows, log):
    make_digits(args.mnist, DIGITS)
    outdir = os.path.join(args.workdir, "gan_mnist")
    run = Command("gan_mnist.py", "--dataroot", args.mnist, "--epochs", 300, "--outdir", outdir, "--overwrite",
                  log=log)
    code, rss = run.finish()
    loop = sum(float(s) for s in re.findall(r"^epoch \d+/300 done in ([\d.]+) s", run.text(), re.M))
    draws = [float(w[0]) for w, _ in run.marked("draw")]
    from PIL import Image
    with Image.open(os.path.join(outdir, "progress.gif")) as gif:
        frames = gif.n_frames
    rows.append(("gan_mnist.py --epochs 300", f"{run.wall:.0f} s in all; the epochs' lines (training, and the "
                                              f"drawings inside the epochs) {loop:.0f} s: {run.wall - loop:.0f} s = "
                                              f"{100 * (run.wall - loop) / run.wall:.1f} % outside them; all the drawings "
                                              f"{sum(draws):.0f} s = {100 * sum(draws) / run.wall:.1f} %; exit {code}"))
    rows.append(("gan_mnist outputs", f"history.csv {os.path.getsize(os.path.join(outdir, 'history.csv')) / 2**20:.1f} MiB; "
                                      f"progress.gif {os.path.getsize(os.path.join(outdir, 'progress.gif')) / 2**20:.1f} "
                                      f"MiB ({frames} frames); {len(draws)} drawings, the last {draws[-1]:.2f} s "
                                      f"({100 * draws[-1] / 30:.1f} % of the 30 s interval); peak RSS {rss:.0f} MiB"))


def dcgan_mnist(args, rows, log):
    make_digits(args.mnist, DIGITS)
    run = Command("dcgan_mnist.py", "--dataroot", args.mnist, "--epochs", 5, "--overwrite", "--outdir",
                  os.path.join(args.workdir, "dcgan_mnist"), log=log)
    code, rss = run.finish()
    epochs = re.findall(r"^epoch \d+/5 done in ([\d.]+) s", run.text(), re.M)
    draws = [float(w[0]) for w, _ in run.marked("draw")]
    rows.append(("dcgan_mnist.py, 5 epochs", f"epochs {', '.join(epochs)} s; {run.wall:.0f} s in all; drawings "
                                             f"{', '.join(f'{d:.2f}' for d in draws)} s; peak RSS {rss:.0f} MiB; exit {code}"))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", required=True)
    p.add_argument("--mnist", required=True)
    p.add_argument("--workdir", required=True, help="the runs' output folders, and rehearsal.log")
    p.add_argument("--only", nargs="+", choices=["celeba", "gan_mnist", "dcgan_mnist"],
                   default=["celeba", "gan_mnist", "dcgan_mnist"])
    p.add_argument("--train-minutes", type=float, default=10)
    p.add_argument("--stream-minutes", type=float, default=2)
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    with open(os.path.join(args.workdir, "rehearsal.log"), "a") as log:
        for part in args.only:
            try:
                {"celeba": celeba, "gan_mnist": gan_mnist, "dcgan_mnist": dcgan_mnist}[part](args, rows, log)
            except Exception as e:  # (one part failing still leaves the table of the others)
                rows.append((part, f"FAILED: {type(e).__name__}: {e}"))
            log.flush()
    print_table(rows, f"; ulimit -n {OPEN_FILES}")


def print_table(rows, machine_note=""):
    """The machine, then the rows as one table of what and figure."""
    import platform
    import torch
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, torch {torch.__version__}{machine_note}\n")
    print("| what | figure |\n|---|---|")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


if __name__ == "__main__":
    main()
