"""The run ETA inside a CelebA-sized first epoch, without the 202,599 JPEGs of the rehearsal:
dcgan_celeba.py at the tutorial's settings on --fake-data 202599 (as many images, decoded into
memory as the faces' cache is loaded: the same training pace), watched for --minutes through the
rehearsal's timing lines, then stopped with SIGINT. Prints the rehearsal's training rows: the
pace, the drawings, and the run ETA at minutes 1 and 5 against the run's length projected from
the pace over all the minutes watched (drawings included).

    python benchmarks/eta_celeba.py --workdir /tmp/eta_celeba --minutes 6
"""
import argparse
import math
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rehearsal import FACES, Command, print_table, training  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="the run's output folder, and eta_celeba.log")
    p.add_argument("--minutes", type=float, default=6, help="how long to watch the training (at least 5)")
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    with open(os.path.join(args.workdir, "eta_celeba.log"), "a") as log:
        run = Command("dcgan_celeba.py", "--fake-data", FACES, "--ngpu", 0, "--overwrite", "--outdir",
                      os.path.join(args.workdir, "run"), log=log)

        def enough(line):
            batches = run.marked("batch")
            return batches and time.monotonic() - batches[0][1] >= 60 * args.minutes
        run.read_until(enough)
        run.finish(signal.SIGINT)
        training(rows, run, batches_per_epoch=math.ceil(FACES / 128), epochs=5)  # (the tutorial's batch)
    print_table(rows)


if __name__ == "__main__":
    main()
