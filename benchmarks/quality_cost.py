"""What measuring sample quality and --ema cost, on this machine (QUALITY.md, "The cost of measuring").

    python benchmarks/quality_cost.py --mnist /tmp/mnist10k --digits 60000 --workdir /tmp/cost

1. The reference classifier's first training, on `--digits` synthetic digits (MNIST's size by
   default: it trains on at most quality.TRAIN_MAX of them), and one --eval-every measurement
   (2,000 samples) of each MNIST script's generator, from the debug lines of a 1-epoch run.
2. --ema's update against an iteration: each script's generator averaged 200 times in a row
   (the update alone), and the MNIST scripts' epochs with and without --ema, alternated, on
   --mnist (the per-epoch lines' training time).
3. FID's cost per image on this machine: Inception (torch-fidelity's network, random weights:
   the same arithmetic as the real ones) on 64x64 faces.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]
from common.average import Average  # noqa: E402
from synthetic import make_digits  # noqa: E402

DEBUG = "import logging, runpy, sys; logging.basicConfig(level=logging.DEBUG, format='debug %(message)s'); " \
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def run(script, *argv):
    p = subprocess.run([sys.executable, "-c", DEBUG, os.path.join(ROOT, f"{script}.py"), *map(str, argv)],
                       capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        sys.exit(p.stderr[-3000:])
    return p.stdout + p.stderr


def first_measurements(args):
    digits = os.path.join(args.workdir, f"digits{args.digits}")
    make_digits(digits, args.digits)
    for script in ("gan_mnist", "dcgan_mnist"):
        for f in os.listdir(os.path.join(digits, "MNIST")):  # (a first training each time)
            if f.startswith("digit_classifier_"):
                os.remove(os.path.join(digits, "MNIST", f))
        log = run(script, "--dataroot", digits, "--epochs", 1, "--eval-every", 1, "--overwrite",
                  "--outdir", os.path.join(args.workdir, script))
        trained = re.search(r"Trained the reference digit classifier in (\d+) s", log)[1]
        measured = re.search(r"measured the live generator in ([\d.]+) s", log)[1]
        epoch = re.search(r"epoch 1/1 done in ([\d.]+) s", log)[1]
        print(f"| {script} | {args.digits} digits | classifier trained in {trained} s | one measurement "
              f"(2,000 samples) {measured} s | the epoch {epoch} s |")


def ema_updates():
    import dcgan_celeba
    import dcgan_mnist
    import gan_mnist
    for name, netG in [("gan_mnist", gan_mnist.make_generator(64, 256)), ("dcgan_mnist", dcgan_mnist.Generator(64)),
                       ("dcgan_celeba", dcgan_celeba.Generator(0, 100, 64))]:
        average = Average(netG, 128)
        for _ in range(20):
            average.update(netG)
        started = time.perf_counter()
        for _ in range(200):
            average.update(netG)
        ms = (time.perf_counter() - started) / 200 * 1000
        params = sum(p.numel() for p in netG.parameters())
        print(f"| {name} | {params:,} parameters | one update {ms:.3f} ms |")


def ema_epochs(args):
    for script, epochs in (("gan_mnist", 4), ("dcgan_mnist", 2)):
        times = {False: [], True: []}
        for repeat in range(2):
            for ema in (False, True):
                log = run(script, "--dataroot", args.mnist, "--epochs", epochs, "--eval-every", 0, "--overwrite",
                          "--outdir", os.path.join(args.workdir, f"{script}_ema{ema}"), *(["--ema"] if ema else []))
                times[ema] += [float(s) for s in re.findall(r"epoch \d+/\d+ done in ([\d.]+) s", log)[1:]]
        plain, with_ema = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {script} | epoch (median of {len(times[False])}) {plain:.2f} s | with --ema {with_ema:.2f} s | "
              f"{with_ema / plain - 1:+.1%} |")


def fid_cost():
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True):
            pass
    path = os.path.join(os.path.dirname(__file__), ".empty.pt")
    torch.save({}, path)
    try:
        net = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
    finally:
        os.remove(path)
    images = torch.randint(0, 256, (100, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        net(images[:10])
        started = time.perf_counter()
        for batch in images.split(50):
            net(batch)
    per_image = (time.perf_counter() - started) / len(images)
    print(f"| Inception features of a 64x64 face (upsampled to 299x299), {torch.get_num_threads()} threads | "
          f"{per_image * 1000:.0f} ms an image | 2,000: {2000 * per_image:.0f} s | 10,000: {10000 * per_image:.0f} s |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist", required=True, help="a writable copy of ../shared/data/mnist-10k")
    p.add_argument("--digits", type=int, default=60000)
    p.add_argument("--workdir", required=True)
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    first_measurements(args)
    ema_updates()
    ema_epochs(args)
    fid_cost()


if __name__ == "__main__":
    main()
