"""Per-epoch speed of each tutorial's own loop against this project's script, side by side.

For each script it alternates two child processes on the same data and machine:
  (a) tutorial: the tutorial's data path (torchvision dataset + DataLoader(shuffle=True), PIL
      decoding and ToTensor/Normalize per image, the tutorial's worker count) and its loop
      mechanics (.item() every iteration, G's graph built in the D step, D's gradients computed
      in the G step, the default Adam);
  (b) project: the script itself (`python X.py ...`).
Both use the same networks from the scripts. Two figures per side:

  whole command  what a user waits for: each child runs twice, for E and 2E epochs, and
                 (wall time of the 2E run - wall time of the E run) / E is its time per epoch,
                 start-up cancelled, every output included (the script's grids, checkpoints and
                 pictures; the tutorial's own outputs: the lesson's sample grid per epoch, the
                 DCGAN tutorial's grid every 500 iterations and its figures at the end, the
                 course's image grids every display step)
  loop only      the per-epoch lines' median, the first epoch (warm-up, caches) dropped

A second table sets the project against the limits: the FLOPs one image costs in the script's
loop (counted with FlopCounterMode), the dense rates this device reaches on one large product
(each in the precision it really runs: on a GPU, PyTorch's defaults run convolutions in TF32 and
matrix products in IEEE float32), and so the fastest an epoch of that arithmetic could be. On a
GPU the peak GPU memory of each side is reported too.

    python benchmarks/bench.py                                   # all three, on the CPU
    python benchmarks/bench.py --scripts gan_mnist --repeats 3 --epochs 4   # E = 4: runs of 4 and 8 epochs
"""
import argparse
import contextlib
import importlib
import io
import os
import platform
import re
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.device import deterministic_cublas  # noqa: E402
from processes import Child, warm_up  # noqa: E402
from synthetic import make_faces  # noqa: E402

# Before anything here multiplies on a GPU: the deterministic runs of the scripts in this process
# (the FLOP count) follow the dense rates.
deterministic_cublas()


# ---------------------------------------------------------------------------------------------
# (a) the tutorials' loops, as they are written there (networks imported from the scripts)
# ---------------------------------------------------------------------------------------------

def tutorial_gan_mnist(args, device):
    import torch
    import torch.nn as nn
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import MNIST
    import gan_mnist
    mnist = MNIST(root=args.mnist, train=True, download=True,
                  transform=T.Compose([T.ToTensor(), T.Normalize(mean=(0.5,), std=(0.5,))]))
    batch_size = 100
    data_loader = DataLoader(mnist, batch_size, shuffle=True)
    D, G = gan_mnist.make_discriminator().to(device), gan_mnist.make_generator().to(device)
    criterion = nn.BCELoss()
    d_optimizer = torch.optim.Adam(D.parameters(), lr=0.0002)
    g_optimizer = torch.optim.Adam(G.parameters(), lr=0.0002)

    def reset_grad():
        d_optimizer.zero_grad()
        g_optimizer.zero_grad()

    def train_discriminator(images):
        real_labels = torch.ones(batch_size, 1).to(device)
        fake_labels = torch.zeros(batch_size, 1).to(device)
        outputs = D(images)
        d_loss_real = criterion(outputs, real_labels)
        real_score = outputs
        z = torch.randn(batch_size, 64).to(device)
        fake_images = G(z)
        outputs = D(fake_images)
        d_loss_fake = criterion(outputs, fake_labels)
        fake_score = outputs
        d_loss = d_loss_real + d_loss_fake
        reset_grad()
        d_loss.backward()
        d_optimizer.step()
        return d_loss, real_score, fake_score

    def train_generator():
        z = torch.randn(batch_size, 64).to(device)
        fake_images = G(z)
        labels = torch.ones(batch_size, 1).to(device)
        g_loss = criterion(D(fake_images), labels)
        reset_grad()
        g_loss.backward()
        g_optimizer.step()
        return g_loss, fake_images

    from torchvision.utils import save_image
    sample_vectors = torch.randn(100, 64, device=device)

    def save_samples(index, latent_tensors):  # the lesson's save_samples(..., show=False)
        fake_images = G(latent_tensors).reshape(-1, 1, 28, 28)
        save_image((fake_images + 1) / 2, os.path.join(args.outdir, f"fake_images-{index:04d}.png"), nrow=10)

    d_losses, g_losses, real_scores, fake_scores = [], [], [], []
    for epoch in range(args.epochs):
        t0 = time.time()
        for i, (images, _) in enumerate(data_loader):
            images = images.reshape(batch_size, -1).to(device)
            d_loss, real_score, fake_score = train_discriminator(images)
            g_loss, fake_images = train_generator()
            if (i + 1) % 200 == 0:  # the notebook records (and prints) every 200 steps
                d_losses.append(d_loss.item())
                g_losses.append(g_loss.item())
                real_scores.append(real_score.mean().item())
                fake_scores.append(fake_score.mean().item())
        sync(device)
        epoch_done(epoch, args.epochs, time.time() - t0, len(mnist))
        save_samples(epoch + 1, sample_vectors)


def tutorial_dcgan_mnist(args, device):
    import torch
    import torch.nn as nn
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import MNIST
    from torchvision.utils import make_grid
    import dcgan_mnist
    criterion = nn.BCEWithLogitsLoss()
    z_dim, display_step, batch_size, lr = 64, 500, 128, 0.0002
    transform = T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    dataset = MNIST(args.mnist, download=True, transform=transform)
    dataloader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    gen = dcgan_mnist.Generator(z_dim).to(device)
    gen_opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    disc = dcgan_mnist.Discriminator().to(device)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    gen, disc = gen.apply(dcgan_mnist.weights_init), disc.apply(dcgan_mnist.weights_init)
    cur_step, mean_generator_loss, mean_discriminator_loss = 0, 0, 0
    for epoch in range(args.epochs):
        t0 = time.time()
        for real, _ in dataloader:
            cur_batch_size = len(real)
            real = real.to(device)
            disc_opt.zero_grad()
            fake_noise = dcgan_mnist.get_noise(cur_batch_size, z_dim, device=device)
            fake = gen(fake_noise)
            disc_fake_pred = disc(fake.detach())
            disc_fake_loss = criterion(disc_fake_pred, torch.zeros_like(disc_fake_pred))
            disc_real_pred = disc(real)
            disc_real_loss = criterion(disc_real_pred, torch.ones_like(disc_real_pred))
            disc_loss = (disc_fake_loss + disc_real_loss) / 2
            mean_discriminator_loss += disc_loss.item() / display_step
            disc_loss.backward(retain_graph=True)
            disc_opt.step()
            gen_opt.zero_grad()
            fake_noise_2 = dcgan_mnist.get_noise(cur_batch_size, z_dim, device=device)
            fake_2 = gen(fake_noise_2)
            disc_fake_pred = disc(fake_2)
            gen_loss = criterion(disc_fake_pred, torch.ones_like(disc_fake_pred))
            gen_loss.backward()
            gen_opt.step()
            mean_generator_loss += gen_loss.item() / display_step
            if cur_step % display_step == 0 and cur_step > 0:
                for images in (fake, real):  # the course's show_tensor_images(fake), (real): a grid each
                    image_grid = make_grid(((images.detach().cpu() + 1) / 2)[:25], nrow=5)
                    image_grid.permute(1, 2, 0).squeeze()
                mean_generator_loss = mean_discriminator_loss = 0
            cur_step += 1
        sync(device)
        epoch_done(epoch, args.epochs, time.time() - t0, len(dataset))


def tutorial_dcgan_celeba(args, device):
    import torch
    import torch.nn as nn
    import torch.optim as optim
    import torchvision.datasets as dset
    import torchvision.transforms as transforms
    import common
    import dcgan_celeba
    image_size, nz, workers, batch_size = 64, 100, 2, 128
    dataset = dset.ImageFolder(root=args.celeba, transform=transforms.Compose([
        transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    netG = dcgan_celeba.Generator(1).to(device).apply(common.weights_init)
    netD = dcgan_celeba.Discriminator(1).to(device).apply(common.weights_init)
    criterion = nn.BCELoss()
    real_label, fake_label = 1., 0.
    optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torchvision.utils as vutils
    fixed_noise = torch.randn(64, nz, 1, 1, device=device)
    img_list, G_losses, D_losses, iters = [], [], [], 0
    for epoch in range(args.epochs):
        t0 = time.time()
        for i, data in enumerate(dataloader, 0):
            netD.zero_grad()
            real_cpu = data[0].to(device)
            b_size = real_cpu.size(0)
            label = torch.full((b_size,), real_label, dtype=torch.float, device=device)
            output = netD(real_cpu).view(-1)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()
            noise = torch.randn(b_size, nz, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach()).view(-1)
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            optimizerD.step()
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake).view(-1)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            optimizerG.step()
            G_losses.append(errG.item())
            D_losses.append(errD.item())
            if (iters % 500 == 0) or ((epoch == args.epochs - 1) and (i == len(dataloader) - 1)):
                with torch.no_grad():
                    fake = netG(fixed_noise).detach().cpu()
                img_list.append(vutils.make_grid(fake, padding=2, normalize=True))
            iters += 1
        sync(device)
        epoch_done(epoch, args.epochs, time.time() - t0, len(dataset))
    # the tutorial's figures at the end: the losses, and real beside fake images
    plt.figure(figsize=(10, 5))
    plt.plot(G_losses, label="G")
    plt.plot(D_losses, label="D")
    plt.legend()
    plt.savefig(os.path.join(args.outdir, "losses.png"))
    real_batch = next(iter(dataloader))
    plt.figure(figsize=(15, 15))
    plt.subplot(1, 2, 1)
    plt.imshow(np.transpose(vutils.make_grid(real_batch[0][:64], padding=5, normalize=True).cpu(), (1, 2, 0)))
    plt.subplot(1, 2, 2)
    plt.imshow(np.transpose(img_list[-1], (1, 2, 0)))
    plt.savefig(os.path.join(args.outdir, "real_vs_fake.png"))
    plt.close("all")


def sync(device):
    """Wait for the device's work to finish (a CUDA-only branch: tests/test_cuda_path.py calls it)."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_done(epoch, epochs, seconds, n):
    print(f"epoch {epoch + 1}/{epochs} done in {seconds:.3f} s ({n / seconds:.0f} img/s)", flush=True)
    if epoch + 1 == epochs:
        import torch
        if torch.cuda.is_initialized():  # as the scripts print it on their last line
            print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB", flush=True)


TUTORIALS = {"gan_mnist": tutorial_gan_mnist, "dcgan_mnist": tutorial_dcgan_mnist,
             "dcgan_celeba": tutorial_dcgan_celeba}


# ---------------------------------------------------------------------------------------------
# The driver: alternate (a) and (b) in child processes and compare
# ---------------------------------------------------------------------------------------------

def child(path, argv):
    """Run `python path argv` (started warm: benchmarks/processes.py; the difference of two run
    lengths cancels the start-up anyway); return (per-epoch seconds, peak RSS in MiB, wall seconds
    of the whole command, peak GPU memory in MiB or None)."""
    t0 = time.perf_counter()
    p = Child(path, argv)
    out, err = p.communicate(timeout=None)
    if p.returncode != 0:
        sys.exit(f"benchmark child failed (python {path} {' '.join(argv)}):\n{(out + err)[-3000:]}")
    wall = time.perf_counter() - t0
    seconds = [float(s) for s in re.findall(r"^epoch \d+/\d+ done in ([\d.]+) s", out, re.M)]
    gpu = re.findall(r"peak GPU memory (\d+) MiB", out)
    return seconds, p.peak_rss_mib, wall, float(gpu[-1]) if gpu else None


def flops_per_image(script, device, tmp):
    """Training FLOPs per image of the script's own loop (matmuls and convolutions, forward and
    backward): run it on two batches and on three of fake images under FlopCounterMode; the
    difference over the batch (the pictures cancel out: the epoch's grid, and dcgan_celeba's
    frames, at its first and its last iteration in both). The products' FLOPs grow with the
    batch, so a small batch counts what the tutorial's counts, per image, in less time."""
    from torch.utils.flop_counter import FlopCounterMode
    module = importlib.import_module(script)
    batch = 8
    counts = []
    for n in (2 * batch, 3 * batch):
        counter = FlopCounterMode(display=False)
        with counter, contextlib.redirect_stdout(io.StringIO()):
            module.main(["--fake-data", str(n), "--batch-size", str(batch), "--epochs", "1", "--device", device,
                         "--overwrite", "--eval-every", "0", "--outdir", os.path.join(tmp, f"flops_{script}_{n}")])
        counts.append(counter.get_total_flops())
    return (counts[1] - counts[0]) / batch


def dense_rates(device):
    """(what, precision, FLOP/s) this device reaches on one large product: as a matrix product (the
    path of nn.Linear) and as a 1x1 convolution (the path of the conv layers; on the CPU oneDNN,
    which may use wider vector units than the BLAS does), each in the precision it runs by
    default, and in bfloat16 (the path of --amp)."""
    import torch
    device = torch.device(device)
    cuda = device.type == "cuda"
    size = 4096 if cuda else 1024
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    x, w = a.reshape(1, size, 64, size // 64), b.reshape(size, size, 1, 1)
    a16, b16 = a.bfloat16(), b.bfloat16()
    matmul = "TF32" if cuda and torch.get_float32_matmul_precision() != "highest" else "float32 (IEEE)"
    conv = "TF32" if cuda and torch.backends.cudnn.allow_tf32 else "float32 (IEEE)"
    cases = [("matrix product", matmul, lambda: a @ b),
             ("1x1 convolution", conv, lambda: torch.nn.functional.conv2d(x, w)),
             ("matrix product", "bfloat16", lambda: a16 @ b16)]
    rates = []
    for name, precision, f in cases:
        f()  # warm-up, and a first estimate: then as many rounds as take about half a second
        sync(device)
        t0 = time.perf_counter()
        f()
        sync(device)
        rounds = max(1, min(200, int(0.5 / max(time.perf_counter() - t0, 1e-6))))
        t0 = time.perf_counter()
        for _ in range(rounds):
            f()
        sync(device)
        rates.append((name, precision, rounds * 2 * size ** 3 / (time.perf_counter() - t0)))
    return rates


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scripts", nargs="+", default=["gan_mnist", "dcgan_mnist", "dcgan_celeba"])
    p.add_argument("--mnist", default=os.path.join(ROOT, "..", "shared", "data", "mnist-10k"),
                   help="MNIST root (holds MNIST/raw/)")
    p.add_argument("--celeba", default=None, help="ImageFolder root (default: synthetic faces)")
    p.add_argument("--faces", type=int, default=512, help="how many synthetic faces to make")
    p.add_argument("--epochs", type=int, default=3,
                   help="E: each side runs E and 2E epochs (whole command: the difference; loop: the 2E run's "
                        "epochs, the first dropped)")
    p.add_argument("--repeats", type=int, default=2, help="alternations of (a) and (b)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--flags", action="append", default=[],
                   help="also time the scripts with these extra flags, e.g. --flags=--channels-last "
                        "(give it again for more variants)")
    p.add_argument("--tutorial", choices=list(TUTORIALS), help=argparse.SUPPRESS)  # child mode
    p.add_argument("--outdir", help=argparse.SUPPRESS)  # the tutorial child's outputs
    args = p.parse_args(argv)
    if args.celeba is None:
        args.celeba = os.path.join(tempfile.gettempdir(), f"bench_faces_{args.faces}")
    if not os.path.exists(args.celeba):
        make_faces(args.celeba, args.faces)

    if args.tutorial:  # child: run one tutorial loop
        import torch
        torch.manual_seed(0)
        TUTORIALS[args.tutorial](args, torch.device(args.device))
        return

    import torch
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, torch {torch.__version__}, device {args.device}")
    results = {}
    warm_up()  # (the server the children are forked from, started before any of them is timed)
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for script in args.scripts:
                data = ["--dataroot", args.celeba if script == "dcgan_celeba" else args.mnist]

                def project(epochs, outdir, *flags):
                    return f"{script}.py", [*data, "--epochs", str(epochs), "--outdir", os.path.join(tmp, outdir),
                                            "--device", args.device, "--checkpoint-every", "1000000", "--overwrite",
                                            *flags]

                def tutorial(epochs, outdir):
                    os.makedirs(os.path.join(tmp, outdir), exist_ok=True)
                    return __file__, ["--tutorial", script, "--epochs", str(epochs), "--mnist", args.mnist,
                                      "--celeba", args.celeba, "--device", args.device, "--outdir",
                                      os.path.join(tmp, outdir)]
                sides = {"tutorial": lambda e: tutorial(e, f"t_{script}"),
                         "project": lambda e: project(e, f"p_{script}")}
                for k, flags in enumerate(args.flags):
                    sides[f"project {flags}"] = lambda e, k=k, flags=flags: project(e, f"p_{script}_{k}", *flags.split())
                for side, command in sides.items():
                    # the same command for E and for 2E epochs: the difference is E epochs of the whole
                    # command as a user waits for it, start-up cancelled, every output included
                    _, rss1, wall1, gpu1 = child(*command(args.epochs))
                    seconds, rss2, wall2, gpu2 = child(*command(2 * args.epochs))
                    r = results.setdefault((script, side), {"epoch_s": [], "whole_s": [], "rss": 0, "gpu": None})
                    r["epoch_s"] += seconds[1:]
                    r["whole_s"].append((wall2 - wall1) / args.epochs)
                    r["rss"] = max(r["rss"], rss1, rss2)
                    if gpu2 is not None:
                        r["gpu"] = max(r["gpu"] or 0, gpu1 or 0, gpu2)
                    print(f"  {script:13s} {side:8s} rep {rep}: whole command {wall1:.1f} s ({args.epochs} epochs), "
                          f"{wall2:.1f} s ({2 * args.epochs}); loop epochs {['%.2f' % x for x in seconds]} s, "
                          f"peak RSS {max(rss1, rss2):.0f} MiB" + (f", peak GPU memory {gpu2:.0f} MiB" if gpu2 else ""),
                          flush=True)
    n = {script: sum(f.endswith((".jpg", ".png")) for _, _, fs in os.walk(args.celeba) for f in fs)
         if script == "dcgan_celeba" else count_mnist(args.mnist) for script in args.scripts}
    print()
    print("| script | images/epoch | whole command s/epoch: tutorial | project | speed-up "
          "| loop only s/epoch: tutorial | project | speed-up | images/s (loop) tutorial / project "
          "| peak RSS tutorial / project | peak GPU memory tutorial / project |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for script in args.scripts:
        t = results[(script, "tutorial")]
        tw, ts = statistics.median(t["whole_s"]), statistics.median(t["epoch_s"])
        for side in [s for (sc, s) in results if sc == script and s != "tutorial"]:
            q = results[(script, side)]
            qw, qs = statistics.median(q["whole_s"]), statistics.median(q["epoch_s"])
            name = script + (f" {side[len('project '):]}" if side != "project" else "")
            gpu = f"{t['gpu']:.0f} / {q['gpu']:.0f} MiB" if t["gpu"] and q["gpu"] else "-"
            print(f"| {name} | {n[script]} | {tw:.2f} | {qw:.2f} | {tw / qw:.2f}x | {ts:.2f} | {qs:.2f} | "
                  f"{ts / qs:.2f}x | {n[script] / ts:.0f} / {n[script] / qs:.0f} | {t['rss']:.0f} / {q['rss']:.0f} MiB "
                  f"| {gpu} |")

    # Against the limits: the arithmetic one epoch needs, and how fast this device multiplies matrices
    rates = dense_rates(args.device)
    print("\nDense rates on this device, one large product each:")
    print("| product | precision | GFLOP/s |")
    print("|---|---|---|")
    for name, precision, r in rates:
        print(f"| {name} | {precision} | {r / 1e9:.0f} |")
    rate = max(r for _, precision, r in rates if precision != "bfloat16")  # the default settings' math
    print(f"\nThe default (not --amp) runs against the best of the non-bfloat16 rates, {rate / 1e9:.0f} GFLOP/s:")
    print("| script | GFLOP/image (project) | project GFLOP/s | share of that rate "
          "| epoch at that rate | speed-up over the tutorial at that rate |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for script in args.scripts:
            f = flops_per_image(script, args.device, tmp)
            qs = statistics.median(results[(script, "project")]["epoch_s"])
            ts = statistics.median(results[(script, "tutorial")]["epoch_s"])
            floor = n[script] * f / rate
            print(f"| {script} | {f / 1e9:.4g} | {n[script] * f / qs / 1e9:.0f} | {n[script] * f / qs / rate:.0%} "
                  f"| {floor:.2f} s | {ts / floor:.1f}x |")


def count_mnist(root):
    with open(os.path.join(root, "MNIST", "raw", "train-images-idx3-ubyte"), "rb") as f:
        return int.from_bytes(f.read(8)[4:8], "big")


if __name__ == "__main__":
    main()
