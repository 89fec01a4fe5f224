"""The whole run as a user waits for it: one script's command, timed from start to exit.

Reports the command's wall time against the sum of its per-epoch loop times (the rest is start-up
and the work after each epoch: grids, checkpoints, pictures), and how far the "run ETA" printed
on each epoch line was from the time the run really still took.

    python benchmarks/whole_run.py -- python gan_mnist.py --dataroot ../shared/data/mnist-10k --epochs 300 --overwrite
"""
import re
import subprocess
import sys
import time


def clock_seconds(text):
    h, m, s = map(int, text.split(":"))
    return 3600 * h + 60 * m + s


def main():
    command = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    t0 = time.monotonic()
    p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                         env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"})
    epochs = []  # (epoch, seconds since start, loop seconds, printed ETA seconds)
    for line in p.stdout:
        m = re.match(r"epoch (\d+)/(\d+) done in ([\d.]+) s .*run ETA (\d+:\d\d:\d\d)", line)
        if m:
            epochs.append((int(m[1]), time.monotonic() - t0, float(m[3]), clock_seconds(m[4])))
    p.wait()
    wall = time.monotonic() - t0
    if p.returncode or not epochs:
        sys.exit(f"the command failed (exit {p.returncode}) or printed no epoch lines")
    loop = sum(e[2] for e in epochs)
    print(f"command: {' '.join(command)}")
    print(f"epochs: {len(epochs)}; wall time {wall:.1f} s; loop time (sum of 'done in') {loop:.1f} s; "
          f"everything else {wall - loop:.1f} s = {(wall - loop) / wall:.1%} of the wall time "
          f"(start-up before the first epoch: {epochs[0][1] - epochs[0][2]:.1f} s)")
    print("| after epoch | printed run ETA | time the run really still took | error |")
    print("|---|---|---|---|")
    marks = sorted({e for e in (1, 5, 10, 20, 50, 100, 150, 200, 250, 299) if e <= len(epochs)} | {len(epochs) - 1})
    for k in [m for m in marks if m >= 1]:
        epoch, at, _, eta = epochs[k - 1]
        left = wall - at
        print(f"| {epoch} | {eta:.0f} s | {left:.1f} s | {(eta - left) / max(left, 1e-9):+.0%} |")
    worst = max((abs(e[3] - (wall - e[1])) / max(wall - e[1], 1e-9) for e in epochs[9:-1] if wall - e[1] > 5),
                default=0)
    print(f"largest ETA error from epoch 10 on (while more than 5 s were left): {worst:.0%}")


if __name__ == "__main__":
    main()
