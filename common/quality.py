"""Sample quality: for the MNIST scripts, by a reference digit classifier of the project's own.

  FD      the Frechet distance between the classifier's penultimate-layer features of N generated
          and N real digits: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); the MNIST analogue of
          FID (lower is better; 0 for two sets with the same feature statistics)
  shares  the share of each digit among the generated samples, as the classifier reads them; the
          smallest shows mode collapse (a digit the generator has stopped making)

The classifier is trained once, seeded, on the training split in --dataroot (the last HELD_OUT
digits, in file order, are held out to measure its accuracy), saved beside the data (or in the
outdir where that cannot be written), and loaded with weights_only=True afterwards. Evaluating
draws its noise from its own generator and leaves every training RNG untouched (the CUDA ones too).

    evaluate(script, args, build_generator, dataloader, device)  # --evaluate N: one measurement
    judged = judge(args, dataloader, image_shape, n)             # --eval-every K: during training
    judged.measure(netG, noise_shape, image_shape, n, seed)      # {"FD": ..., "shares": ...}

judge() picks the measure by the images: digits by the classifier here, colour images (faces) by
FID, common/fid.py.
"""
import hashlib
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoints import atomic_save, load_generator, to_cpu
from .device import deterministic_algorithms
from .errors import UserError, cannot_write
from .outdir import claim, output, replaced_file
from .pictures import plot_shares
from .sampling import samples

HELD_OUT = 2000  # the last 2,000 digits of the training split: never trained on, they measure accuracy
TRAIN_MAX = 12000  # trained on at most the first 12,000 of the others (about a minute on 2 CPU cores)
VERSION = 1  # part of the cache key: a change to the classifier or its training retrains it


class DigitClassifier(nn.Module):
    """A small CNN on 28x28 digits in [-1, 1]; features() is its 128-wide penultimate layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),   # 32 x 13 x 13
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # 64 x 5 x 5
            nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    def features(self, x):
        return self.conv(x)

    def forward(self, x):
        return self.head(self.features(x))


def classifier(images, labels, cache_dirs, device):
    """The reference classifier for these digits (uint8 N x 1 x 28 x 28, labels): loaded from the
    first of cache_dirs that holds it, else trained and saved into the first that can be written."""
    key = hashlib.sha256(f"v{VERSION}".encode() + images.cpu().numpy().tobytes() +
                         labels.cpu().numpy().tobytes()).hexdigest()[:16]
    # one per device kind: trained on a GPU, its weights (and so every FD) differ in the last bits
    name = f"digit_classifier_{key}.pt" if device.type == "cpu" else f"digit_classifier_{key}_{device.type}.pt"
    for folder in cache_dirs:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                with torch.random.fork_rng(devices=[]):  # building it draws its default init: not from the run's RNG
                    net = DigitClassifier()
                net.load_state_dict(saved["weights"])
                return net.to(device).eval()
            except Exception:
                print(f"notice: the classifier {path} is unreadable; training it again.")
    net, accuracy, seconds = train_classifier(images, labels, device)
    print(f"Trained the reference digit classifier in {seconds:.0f} s: {accuracy:.2%} right on the "
          f"{min(HELD_OUT, len(images) // 5)} held-out digits (the last ones of the training split)")
    for folder in cache_dirs:
        try:
            atomic_save({"weights": to_cpu(net.state_dict()), "accuracy": accuracy}, os.path.join(folder, name))
            break
        except OSError:
            continue
    return net.eval()


def as_input(digits, device):
    """uint8 digits -> the classifier's input in [-1, 1] on device, through a table of the 256 values
    made on the CPU (dividing on a GPU would round differently: see common.data.pixel_table)."""
    table = torch.arange(256).float().div(255).sub(0.5).div(0.5).to(device)
    return table[digits.to(device).long()]


def train_classifier(images, labels, device, epochs=4, batch_size=64):
    """Seeded training that leaves every global RNG as it was. Returns (net, held-out accuracy, s)."""
    t0 = time.monotonic()
    held_out = min(HELD_OUT, len(images) // 5)
    x = as_input(images, device)
    y = labels.to(device).long()
    train_x, train_y = x[:len(x) - held_out][:TRAIN_MAX], y[:len(y) - held_out][:TRAIN_MAX]
    # Only the CPU generator is seeded, and fork_rng gives it back: torch.manual_seed would also
    # reseed every CUDA generator, which fork_rng(devices=[]) does not restore. The net is built
    # on the CPU and trained without random draws on the device.
    # --cudnn-benchmark would let cuDNN pick other kernels, hence other weights, for a classifier
    # that later deterministic runs load from the cache: it is trained deterministically always.
    with torch.random.fork_rng(devices=[]), deterministic_algorithms():
        torch.default_generator.manual_seed(0)
        net = DigitClassifier().to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            order = torch.randperm(len(train_x), generator=gen).to(device)
            for k in range(0, len(order), batch_size):
                index = order[k:k + batch_size]
                loss = F.cross_entropy(net(train_x[index]), train_y[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    with torch.no_grad():
        accuracy = (net(x[len(x) - held_out:]).argmax(1) == y[len(y) - held_out:]).float().mean().item()
    return net, accuracy, time.monotonic() - t0


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64.

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are those
    of the symmetric S1^(1/2) S2 S1^(1/2): no non-symmetric matrix root is needed.
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    values, vectors = torch.linalg.eigh(sigma1)
    root1 = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    middle = root1 @ sigma2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_root).item()


def moments(features):
    """Mean and covariance (unbiased) of N feature vectors."""
    features = features.double()
    return features.mean(0), torch.cov(features.T)


def real_moments(net, real, device, batch=500):
    """Mean and covariance of the classifier's features of real digits (uint8)."""
    with torch.no_grad():
        features = [net.features(as_input(real[k:k + batch], device)).cpu() for k in range(0, len(real), batch)]
    return moments(torch.cat(features))


# Samples per measurement during training (--eval-every): a tenth of --evaluate's 10,000, so that
# a default run's measurements cost little (QUALITY.md); each measurement draws the same noise
SAMPLES_DURING_TRAINING = 2000


class Digits:
    """The judge of generated digits: FD and digit shares by the reference classifier, against the
    first n real digits of the training split."""
    score = "FD"

    def __init__(self, dataloader, cache_dirs, n):
        images, labels = dataloader.uint8_images()
        self.net = classifier(images, labels, cache_dirs, dataloader.device)
        self.real, self.n_real = real_moments(self.net, images[:n], dataloader.device), min(n, len(images))

    def measure(self, netG, noise_shape, image_shape, n, seed):
        """FD and digit shares of n samples of netG (common.sampling.samples)."""
        features, counts = [], torch.zeros(10, dtype=torch.long)
        with torch.no_grad():
            for images in samples(netG, noise_shape, image_shape, n, seed):
                f = self.net.features(images.float())
                counts += torch.bincount(self.net.head(f).argmax(1).cpu(), minlength=10)
                features.append(f.cpu())
        fd = frechet_distance(*moments(torch.cat(features)), *self.real)
        shares = (counts.double() / counts.sum()).tolist()
        return {"FD": fd, "smallest_share": min(shares), "rarest_digit": shares.index(min(shares)), "shares": shares,
                "n": n, "n_real": self.n_real}

    @staticmethod
    def line(result):
        """One line: FD first, then the ten shares."""
        shares = "  ".join(f"{d}: {s:.1%}" for d, s in enumerate(result["shares"]))
        return (f"FD {result['FD']:.3f}  smallest share {result['smallest_share']:.1%} (digit "
                f"{result['rarest_digit']})  shares  {shares}")


def kind(dataloader):
    """What the training images are, in a word: digits (1 x 28 x 28), or faces."""
    return "digits" if tuple(dataloader.first_images(1).shape[1:]) == (1, 28, 28) else "faces"


def judge(args, dataloader, image_shape, n):
    """What samples are measured with: digits (1 x 28 x 28) by the reference classifier, colour
    images (faces) by FID (common/fid.py), against n real images of --dataroot."""
    if tuple(image_shape) == (1, 28, 28):
        return Digits(dataloader, [os.path.join(args.dataroot, "MNIST"), args.outdir], n)
    from .fid import Faces
    return Faces(dataloader, [args.dataroot, args.outdir], n, getattr(args, "inception_weights", None))


def evaluate(script, args, build_generator, dataloader, device):
    """--evaluate N: one measurement of N samples of the run's generator (--generator chooses which;
    build_generator(settings): the script's generator for the run's saved settings) against N real
    images: prints one line (FD or FID first), writes evaluation.json (and, for digits, their
    shares as evaluation.png). Trains nothing."""
    if args.fake_data:
        raise UserError(f"--evaluate measures samples against real {kind(dataloader)}, and --fake-data has none; "
                        f"point --dataroot at the dataset.")
    n = args.evaluate
    if n > dataloader.n:
        print(f"notice: --evaluate {n} asks for more samples than the {dataloader.n} real {kind(dataloader)} in "
              f"--dataroot; measuring {dataloader.n} generated against {dataloader.n} real (the measure depends on "
              f"the number).")
        n = dataloader.n
    with claim(args.outdir):
        netG, ckpt, which = load_generator(args.outdir, script, build_generator, device, args.math_defaults,
                                           args.generator)
        print(f"Measuring {which}")
        judged = judge(args, dataloader, ckpt["image_shape"], n)
        result = {"epoch": ckpt["epoch"], "iteration": ckpt["iteration"], "generator": which, "seed": args.seed,
                  **judged.measure(netG, ckpt["fixed_noise"].shape[1:], tuple(ckpt["image_shape"]), n, args.seed)}
        print(judged.line(result))
        try:
            if "shares" in result:
                plot_shares(result, output(args.outdir, "evaluation.png"), f"{script}, epoch {ckpt['epoch']}")
            with replaced_file(output(args.outdir, "evaluation.json")) as tmp, open(tmp, "w") as f:
                json.dump(result, f, indent=1)
        except OSError as e:  # (a full disk, say: the line above holds the result)
            raise UserError(f"could not write the evaluation's files to {args.outdir}/ {cannot_write(e)}; "
                            f"the result is the line above.") from None
        print(f"Wrote {'evaluation.png and ' if 'shares' in result else ''}evaluation.json to {args.outdir}/")

