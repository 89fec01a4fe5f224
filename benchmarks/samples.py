"""QUALITY.md's figures: the last generator, the best kept and the average, side by side, at the
lessons' budgets, for three seeds, then checked by a second, independent classifier.

    python benchmarks/samples.py --dataroot /tmp/mnist10k --out /tmp/samples [--half-life 1000]

1. Trains (two runs at a time, one thread each; a finished run is not trained again):
       gan_mnist.py   --epochs 150 --eval-every 10 --ema --seed S
       dcgan_mnist.py --epochs 20  --eval-every 2  --ema --seed S
   (--ema leaves the training as it was, so each run gives the live generator's figures too.)
2. Measures the last, the best kept (best.pt) and the averaged generator again on 10,000 fresh
   samples (another noise seed than the training's measurements): by the scripts' own --evaluate
   (the reference classifier) and by a second classifier of another architecture (LeNet),
   another seed, trained on other digits: the 2,000 the reference classifier holds out.
3. Prints one table (markdown) per script and the cost of measuring (from the runs' debug lines).

--dataroot must be writable (the reference classifier is cached beside the data): a copy of
../shared/data/mnist-10k.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import quality  # noqa: E402
from common.checkpoints import load_generator  # noqa: E402
from common.sampling import samples  # noqa: E402

RUNS = {"gan_mnist": ["--epochs", "150", "--eval-every", "10"], "dcgan_mnist": ["--epochs", "20", "--eval-every", "2"]}
# The child: the script with common's debug lines on (the measurements' times), and --half-life
# (an experiment's setting, not a flag of the scripts) in common/average.py's HALF_LIFE_IMAGES
CHILD = "import logging, runpy, sys; logging.basicConfig(level=logging.DEBUG, format='debug %(message)s'); " \
        "import common.average; common.average.HALF_LIFE_IMAGES = float(sys.argv[1]) or " \
        "common.average.HALF_LIFE_IMAGES; sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
FRESH_SEED = 12345  # the re-measurement's noise: not the training's measurements' (--seed)
N = 10_000


def train(script, seed, args):
    outdir = os.path.join(args.out, f"{script}_{seed}")
    if os.path.exists(os.path.join(outdir, "run.log")):
        return outdir
    command = [sys.executable, "-c", CHILD, str(args.half_life), os.path.join(ROOT, f"{script}.py"), "--dataroot", args.dataroot,
               "--seed", str(seed), "--ema", *RUNS[script], "--outdir", outdir + ".partial", "--overwrite"]
    started = time.monotonic()
    p = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if p.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{p.stderr[-3000:]}")
    with open(os.path.join(outdir + ".partial", "run.log"), "w") as f:
        f.write(f"wall {time.monotonic() - started:.1f}\n" + p.stdout + p.stderr)
    os.rename(outdir + ".partial", outdir)
    return outdir


class SecondClassifier(nn.Module):
    """Another architecture than the reference classifier's (3x3 convolutions, max-pooling, 128
    features): LeNet's 5x5 convolutions with average pooling, tanh, 84 features."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),  # 6 x 14 x 14
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),            # 16 x 5 x 5
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh())
        self.head = nn.Linear(84, 10)

    def features(self, x):
        return self.body(x)


def second_classifier(images, labels):
    """Trained (seed 7) on the last HELD_OUT digits, which the reference classifier never saw; its
    accuracy measured on the first 2,000."""
    torch.manual_seed(7)
    net = SecondClassifier()
    x, y = quality.as_input(images[-quality.HELD_OUT:], torch.device("cpu")), labels[-quality.HELD_OUT:]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(30):
        for k in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(net.head(net.features(x[k])), y[k]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        test = quality.as_input(images[:2000], torch.device("cpu"))
        accuracy = (net.head(net.features(test)).argmax(1) == labels[:2000]).double().mean().item()
    return net, accuracy


def second_fd(net, real_moments, netG, noise_shape):
    features, counts = [], torch.zeros(10, dtype=torch.long)
    with torch.no_grad():
        for images in samples(netG, noise_shape, (1, 28, 28), N, FRESH_SEED):
            f = net.features(images.float())
            counts += torch.bincount(net.head(f).argmax(1), minlength=10)
            features.append(f)
    shares = counts.double() / counts.sum()
    return quality.frechet_distance(*quality.moments(torch.cat(features)), *real_moments), shares.min().item()


def builder(script):
    if script == "gan_mnist":
        import gan_mnist
        return lambda s: gan_mnist.make_generator(s["latent_size"], s["hidden_size"])
    import dcgan_mnist
    return lambda s: dcgan_mnist.Generator(s["z_dim"], hidden_dim=s["hidden_dim"])


def evaluate(script, outdir, which, dataroot):
    """The script's own --evaluate 10000 of one generator: (FD, smallest share)."""
    subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), "--dataroot", dataroot, "--outdir", outdir,
                    "--evaluate", str(N), "--generator", which, "--seed", str(FRESH_SEED)], check=True,
                   capture_output=True)
    with open(os.path.join(outdir, "evaluation.json")) as f:
        result = json.load(f)
    return result["FD"], result["smallest_share"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--half-life", type=float, default=0,
                        help="--ema's half-life in images at batch 32 (default: common/average.py's)")
    args = parser.parse_args()
    jobs = [(script, seed) for script in RUNS for seed in args.seeds]
    with ThreadPoolExecutor(2) as pool:
        outdirs = dict(zip(jobs, pool.map(lambda job: train(*job, args), jobs)))

    import torchvision
    mnist = torchvision.datasets.MNIST(args.dataroot, train=True)  # the training split, in file order
    images, labels = mnist.data[:, None], mnist.targets
    net2, accuracy = second_classifier(images, labels)
    with torch.no_grad():
        real2 = quality.moments(net2.features(quality.as_input(images, torch.device("cpu"))))
    print(f"second classifier (LeNet, seed 7, trained on the last {quality.HELD_OUT} digits): {accuracy:.2%} right on "
          f"the first 2,000")

    for script in RUNS:
        print(f"\n### {script} {' '.join(RUNS[script])} --ema\n")
        print("| seed | generator | FD during training (2,000, ref.) | FD (10,000 fresh, ref.) | smallest share "
              "(ref.) | FD (second classifier) | smallest share (second) |")
        print("|---|---|---|---|---|---|---|")
        costs = []
        for seed in args.seeds:
            outdir = outdirs[script, seed]
            ckpt = torch.load(os.path.join(outdir, "checkpoint.pt"), weights_only=True)
            rows = ckpt["quality"]
            kept = torch.load(os.path.join(outdir, "best.pt"), weights_only=True)
            last_epoch = max(r["epoch"] for r in rows)
            during = {"last": next(r for r in rows if r["epoch"] == last_epoch and r["generator"] == "live"),
                      "average": next(r for r in rows if r["epoch"] == last_epoch and r["generator"] == "average"),
                      "best": next(r for r in rows if (r["epoch"], r["generator"]) == (kept["epoch"], kept["generator"]))}
            best_live = min((r for r in rows if r["generator"] == "live"), key=lambda r: r["FD"])
            best_average = min((r for r in rows if r["generator"] == "average"), key=lambda r: r["FD"])
            for which in ("last", "best", "average"):
                fd, share = evaluate(script, outdir, which, args.dataroot)
                netG, ckpt, _ = load_generator(outdir, script, builder(script), torch.device("cpu"), {}, which)
                fd2, share2 = second_fd(net2, real2, netG, ckpt["fixed_noise"].shape[1:])
                label = {"best": f"best kept ({kept['generator']}, epoch {kept['epoch']})",
                         "average": f"average, last (best: {best_average['FD']:.1f} at epoch {best_average['epoch']})",
                         "last": f"last (best live: {best_live['FD']:.1f} at epoch {best_live['epoch']})"}[which]
                print(f"| {seed} | {label} | {during[which]['FD']:.1f} | {fd:.1f} | {share:.1%} | {fd2:.2f} | "
                      f"{share2:.1%} |")
            with open(os.path.join(outdir, "run.log")) as f:
                log = f.read()
            measured = [float(s) for s in re.findall(r"measured the \w+ generator in ([\d.]+) s", log)]
            trained = re.search(r"Trained the reference digit classifier in (\d+) s", log)
            costs.append((float(log.split()[1]), sum(measured), len(measured), trained and int(trained[1])))
        for wall, measured, count, trained in costs:
            print(f"\nwall {wall:.0f} s; {count} measurements {measured:.1f} s ({measured / wall:.1%})"
                  + (f"; the classifier trained in {trained} s" if trained else ""))


if __name__ == "__main__":
    main()
