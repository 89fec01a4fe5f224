"""A fully-connected GAN on MNIST digits: "Zero to GANs" lesson 6 (Jovian) as one script.

Follows the lesson's notebook "Generative Adversarial Networks in PyTorch": the same
discriminator and generator (plain Linear layers), BCE loss, Adam optimizers, latent size,
batch size and 300 epochs, in the same order and with the same names. What differs is only
mechanics that do not change the math: the digits are held as one tensor and batched through a
seeded permutation, the discriminator step does not build G's graph it would throw away, and
numbers stay on the device between log lines.

    python gan_mnist.py --epochs 300                 # MNIST is downloaded into --dataroot
    python gan_mnist.py --fake-data --epochs 1       # a smoke run with no dataset
"""
import argparse
import os
import time

import torch
import torch.nn as nn

import common

image_size = 784  # 28 x 28 pixels, flattened


def as_images(vectors):
    """784-vectors -> 1 x 28 x 28 images, for the pictures."""
    return vectors.reshape(-1, 1, 28, 28)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(parser, dataroot="data", epochs=300, batch_size=100, workers=0, seed=42)
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
    outdir = common.prepare_outdir(args, "gan_mnist")
    device = common.pick_device(args.device)
    print("Random Seed:", args.seed, "| device:", device)
    common.seed_everything(args.seed, args.cudnn_benchmark)
    latent_size = args.latent_size

    if args.generate:
        ckpt = common.load_checkpoint(outdir)
        s = ckpt["settings"]
        G = nn.Sequential(make_generator(s["latent_size"], s["hidden_size"]), nn.Unflatten(1, (1, 28, 28)))
        G[0].load_state_dict(ckpt["netG"])
        common.generate(G.to(device), s["latent_size"], (s["latent_size"],), args, outdir)
        return

    # MNIST training images with ToTensor() and Normalize((0.5,), (0.5,)): pixels in [-1, 1]
    data = common.fake_images(args.fake_data, (1, 28, 28)) if args.fake_data else \
        common.mnist(args.dataroot, stream=args.stream)
    data = common.data_on_device(data, device)
    total_step = common.n_batches(data, args.batch_size)
    print(f"{data['n']} training images, {total_step} batches per epoch")

    D = make_discriminator(args.hidden_size).to(device)
    G = make_generator(latent_size, args.hidden_size).to(device)
    print(D)
    print(G)
    # Opt-in speed-ups (--amp, --channels-last, --compile): off by default, they change the numerics
    D, G = common.speed_up(D, args, device), common.speed_up(G, args, device)

    # Binary cross entropy loss and Adam optimizers (fused: one kernel for all parameters, same math)
    criterion = nn.BCELoss()
    d_optimizer = torch.optim.Adam(D.parameters(), lr=args.lr, fused=True)
    g_optimizer = torch.optim.Adam(G.parameters(), lr=args.lr, fused=True)

    # The same 100 latent vectors every epoch, to watch the generator learn
    sample_vectors = torch.randn(100, latent_size, device=device)

    history = common.new_history(["loss_d", "loss_g", "D_x", "D_G_z"])
    settings = common.math_settings(args, data["id"])
    start_epoch, start_iter = 0, 0
    if args.resume:  # both nets and optimizers, the position, fixed noise, history, every RNG state
        start_epoch, start_iter, sample_vectors, history = common.resume(
            outdir, settings, G, D, g_optimizer, d_optimizer, device)
        if start_epoch >= args.epochs:
            print(f"This run has already trained {start_epoch} epochs (--epochs {args.epochs}): nothing to "
                  f"do. Give a larger --epochs to train on.")
            return
        print(f"Resuming at epoch {start_epoch}, iteration {start_iter}")
    else:
        common.save_grid(common.first_images(data, args, 100), os.path.join(outdir, "real_images.png"), nrow=10)
        with torch.no_grad():
            common.save_grid(as_images(G(sample_vectors)), os.path.join(outdir, "samples", "epoch_0000.png"), nrow=10)

    def save_checkpoint(epoch, iteration):
        common.save_checkpoint(outdir, settings, G, D, g_optimizer, d_optimizer,
                               epoch, iteration, sample_vectors, history)

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

    pending = []  # this epoch's numbers, still on the device
    iters = len(history["epoch"])
    common.catch_stop_signals()  # Ctrl-C / SIGTERM: finish the iteration, save, exit
    t_start = time.time()
    for epoch in range(start_epoch, args.epochs):
        start = start_iter if epoch == start_epoch else 0
        for i, images in common.progress(common.batches(data, args, epoch, start, device),
                                         data, args, epoch, start):
            # Load a batch & transform to vectors
            images = images.reshape(images.size(0), -1)

            # Train the discriminator and generator
            d_loss, real_score, fake_score = train_discriminator(images)
            g_loss, fake_images = train_generator(images.size(0))

            # Inspect the losses
            common.record(pending, epoch, i, d_loss, g_loss, real_score.mean(), fake_score.mean())
            if (i + 1) % 200 == 0:
                common.log('Epoch [{}/{}], Step [{}/{}], d_loss: {:.4f}, g_loss: {:.4f}, D(x): {:.2f}, D(G(z)): {:.2f}'
                           .format(epoch, args.epochs, i + 1, total_step, d_loss.item(), g_loss.item(),
                                   real_score.mean().item(), fake_score.mean().item()))
            iters += 1
            stop = common.stop_requested()  # Ctrl-C or SIGTERM arrived: save and exit
            if iters % args.checkpoint_every == 0 or stop:
                common.flush(history, pending)
                save_checkpoint(epoch, i + 1)
            if stop:
                common.write_history_csv(history, os.path.join(outdir, "history.csv"))
                common.exit_after_stop(epoch, i + 1, outdir)

        # Sample and save images
        common.flush(history, pending)
        common.epoch_line(epoch, args, data)
        with torch.no_grad():
            fake_images = as_images(G(sample_vectors)).cpu()
        common.save_grid(fake_images, os.path.join(outdir, "samples", f"epoch_{epoch + 1:04d}.png"), nrow=10)
        save_checkpoint(epoch + 1, 0)
        common.write_epoch_outputs(outdir, history, ["loss_d", "loss_g"], ["D_x", "D_G_z"])
        common.real_vs_fake(common.first_images(data, args, 100), fake_images,
                            os.path.join(outdir, "real_vs_fake.png"), nrow=10)
        if common.stop_requested():
            common.exit_after_stop(epoch + 1, 0, outdir)

    common.summary(outdir, time.time() - t_start, history, ["loss_d", "loss_g"])


if __name__ == "__main__":
    common.run(main)
