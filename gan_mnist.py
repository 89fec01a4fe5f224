"""A fully-connected GAN on MNIST digits: "Zero to GANs" lesson 6 (Jovian) as one script.

Follows the lesson's notebook "Generative Adversarial Networks in PyTorch": the same
discriminator and generator (plain Linear layers), BCE loss, Adam optimizers, latent size,
batch size and 300 epochs, in the same order and with the same names. What differs is only
mechanics that do not change the math: common.DataLoader holds the digits as one tensor on the
device and batches them through a seeded permutation, the discriminator step does not build
G's graph it would throw away, numbers stay on the device between log lines, and common.Run
saves, draws and resumes the run bit for bit.

    python gan_mnist.py --epochs 300                 # MNIST is downloaded into --dataroot
    python gan_mnist.py --fake-data --epochs 1       # a smoke run with no dataset
"""
import signal
signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C while torch loads: stop at once, no traceback

import argparse  # noqa: E402 (the line above must come first)

import torch
import torch.nn as nn
import torchvision.transforms as T
from torchvision.datasets import MNIST, FakeData

import common

image_size = 784  # 28 x 28 pixels, flattened


def parse_args(argv=None):
    parser = common.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(parser, script="gan_mnist", dataroot="data", epochs=300, batch_size=100, workers=0,
                           seed=42, measured=True)
    parser.add_argument("--latent-size", type=common.positive_int, default=64, help="size of the noise vector")
    parser.add_argument("--hidden-size", type=common.positive_int, default=256, help="width of the hidden layers")
    parser.add_argument("--lr", type=common.positive_float, default=0.0002, help="Adam learning rate (both nets)")
    return parser.parse_args(argv)


# Discriminator: image (784 numbers) -> probability that it is real
def make_discriminator(hidden_size=256):
    return nn.Sequential(
        nn.Linear(image_size, hidden_size),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_size, hidden_size),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_size, 1),
        nn.Sigmoid())


# Generator: latent vector (64 numbers) -> image (784 numbers in [-1, 1])
def make_generator(latent_size=64, hidden_size=256):
    return nn.Sequential(
        nn.Linear(latent_size, hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, image_size),
        nn.Tanh())


def main(argv=None):
    args = parse_args(argv)
    device = common.pick_device(args.device)
    print("Random Seed:", args.seed, "| device:", device)
    common.seed_everything(args.seed, args.cudnn_benchmark)
    latent_size, batch_size = args.latent_size, args.batch_size

    if args.generate:  # train nothing: N images from the generator of the run in --outdir
        return common.generate("gan_mnist", args, lambda s: make_generator(s["latent_size"], s["hidden_size"]),
                               device)

    # MNIST training images, with pixel values normalised to [-1, 1]
    transform = T.Compose([T.ToTensor(), T.Normalize(mean=(0.5,), std=(0.5,))])
    if args.fake_data:  # a smoke run with no dataset: random images through the same transform
        mnist = FakeData(args.fake_data, (1, 28, 28), transform=transform)
    else:
        with common.mnist_errors(args.dataroot):  # missing or damaged files: one sentence saying what to do
            mnist = MNIST(root=args.dataroot, train=True, download=True, transform=transform)
    # The digits held as one tensor on the device, reshuffled each epoch, batched like DataLoader's
    data_loader = common.DataLoader(mnist, batch_size, shuffle=True, num_workers=args.workers, device=device,
                                    seed=args.seed, stream=args.stream)
    total_step = len(data_loader)
    if args.evaluate:  # train nothing: FD and digit shares of the run in --outdir (common/quality.py)
        return common.evaluate("gan_mnist", args, lambda s: make_generator(s["latent_size"], s["hidden_size"]),
                               data_loader, device)

    D = make_discriminator(args.hidden_size).to(device)
    G = make_generator(latent_size, args.hidden_size).to(device)
    print(D)
    print(G)
    # Opt-in speed-ups (--amp, --channels-last, --compile): off by default, they change the numerics
    speed = dict(amp=args.amp, channels_last=args.channels_last, compile=args.compile)
    D, G = common.speed_up(D, device, **speed), common.speed_up(G, device, **speed)

    # Binary cross entropy loss and Adam optimizers (fused: one kernel for all parameters, same math)
    criterion = nn.BCELoss()
    d_optimizer = torch.optim.Adam(D.parameters(), lr=args.lr, fused=True)
    g_optimizer = torch.optim.Adam(G.parameters(), lr=args.lr, fused=True)

    # The same 100 latent vectors every epoch, to watch the generator learn
    sample_vectors = torch.randn(100, latent_size, device=device)
    # The run's record: --outdir (one run at a time), checkpoints, history and pictures. A new run
    # writes the real images and epoch 0; --resume restores everything saved, sample_vectors too
    run = common.Run("gan_mnist", args, G, D, g_optimizer, d_optimizer, sample_vectors, data_loader,
                     losses=["loss_d", "loss_g"], scores=["D_x", "D_G_z"], nrow=10)
    sample_vectors = run.fixed_noise

    def train_discriminator(images):
        # Create the labels which are later on used as input for the BCE loss
        real_labels = torch.ones(images.size(0), 1, device=device)
        fake_labels = torch.zeros(images.size(0), 1, device=device)

        # Loss for real images
        outputs = D(images)
        d_loss_real = criterion(outputs, real_labels)
        real_score = outputs

        # Loss for fake images. G is not trained in this step, so no graph is built through it
        # (the lesson builds one, then throws its gradients away).
        z = torch.randn(images.size(0), latent_size, device=device)
        with torch.no_grad():
            fake_images = G(z)
        outputs = D(fake_images)
        d_loss_fake = criterion(outputs, fake_labels)
        fake_score = outputs

        # Combine losses
        d_loss = d_loss_real + d_loss_fake
        # Reset gradients
        d_optimizer.zero_grad()
        # Compute gradients
        d_loss.backward()
        # Adjust the parameters using backprop
        d_optimizer.step()
        return d_loss, real_score, fake_score

    def train_generator(n):
        # Generate fake images and calculate loss
        z = torch.randn(n, latent_size, device=device)
        fake_images = G(z)
        labels = torch.ones(n, 1, device=device)
        D.requires_grad_(False)  # only G's gradients are used in this step
        g_loss = criterion(D(fake_images), labels)
        # Backprop and optimize
        g_optimizer.zero_grad()
        g_loss.backward()
        D.requires_grad_(True)
        g_optimizer.step()
        return g_loss, fake_images

    for epoch in run.epochs():  # from the saved epoch on --resume
        for i, (images, _) in enumerate(data_loader, data_loader.start):  # a resumed epoch starts where it stopped
            # Load a batch & transform to vectors
            images = images.reshape(images.size(0), -1)

            # Train the discriminator and generator
            d_loss, real_score, fake_score = train_discriminator(images)
            g_loss, fake_images = train_generator(images.size(0))

            # Inspect the losses
            if (i + 1) % 200 == 0:
                run.log('Epoch [{}/{}], Step [{}/{}], d_loss: {:.4f}, g_loss: {:.4f}, D(x): {:.2f}, D(G(z)): {:.2f}'
                        .format(epoch, args.epochs, i + 1, total_step, d_loss.item(), g_loss.item(),
                                real_score.mean().item(), fake_score.mean().item()))
            # Record the losses (and save checkpoints; Ctrl-C saves and exits here)
            run.step(i, d_loss, g_loss, real_score.mean(), fake_score.mean())

        # Sample and save images
        with torch.no_grad():
            fake_images = G(sample_vectors).reshape(-1, 1, 28, 28)
        run.end_epoch(fake_images)  # its grid, a checkpoint, the plots and the GIF

    run.finish()


if __name__ == "__main__":
    common.run_script(main)
