"""A first DCGAN on MNIST digits: the Coursera GAN course's "Deep Convolutional GAN" as one script.

Follows the assignment of course 1, week 2 (GANs Specialization, DeepLearning.AI): the same
generator and discriminator blocks, initialisation, BCEWithLogits loss, Adam settings, batch
size and display step, in the same order and with the same names. What differs is only
mechanics that do not change the math: the digits are held as one tensor and batched through a
seeded permutation, the discriminator step does not build G's graph it would throw away, and
numbers stay on the device between log lines.

    python dcgan_mnist.py                            # MNIST is downloaded into --dataroot
    python dcgan_mnist.py --fake-data --epochs 1     # a smoke run with no dataset
"""
import argparse
import os
import time

import torch
import torch.nn as nn

import common

display_step = 500  # print the mean losses every this many steps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(parser, dataroot="data", epochs=50, batch_size=128, workers=0, seed=0)
    parser.add_argument("--z-dim", type=common.positive_int, default=64, help="dimension of the noise vector")
    parser.add_argument("--hidden-dim", type=common.positive_int, default=64, help="generator width (hidden_dim)")
    parser.add_argument("--disc-hidden-dim", type=common.positive_int, default=16, help="discriminator width")
    parser.add_argument("--lr", type=common.positive_float, default=0.0002, help="Adam learning rate")
    parser.add_argument("--beta1", type=common.beta, default=0.5, help="Adam beta_1")
    parser.add_argument("--beta2", type=common.beta, default=0.999, help="Adam beta_2")
    return parser.parse_args(argv)


class Generator(nn.Module):
    """Noise (z_dim) -> 28x28 image. Spatial size: 1 -> 3 -> 6 -> 13 -> 28 (no padding)."""

    def __init__(self, z_dim=10, im_chan=1, hidden_dim=64):
        super().__init__()
        self.z_dim = z_dim
        # Build the neural network
        self.gen = nn.Sequential(
            self.make_gen_block(z_dim, hidden_dim * 4),                          # 256 x 3 x 3
            self.make_gen_block(hidden_dim * 4, hidden_dim * 2, kernel_size=4, stride=1),  # 128 x 6 x 6
            self.make_gen_block(hidden_dim * 2, hidden_dim),                     # 64 x 13 x 13
            self.make_gen_block(hidden_dim, im_chan, kernel_size=4, final_layer=True),   # 1 x 28 x 28
        )

    def make_gen_block(self, input_channels, output_channels, kernel_size=3, stride=2, final_layer=False):
        """A transposed convolution, then BatchNorm and ReLU, except for the last block (Tanh)."""
        if not final_layer:
            return nn.Sequential(
                nn.ConvTranspose2d(input_channels, output_channels, kernel_size, stride),
                nn.BatchNorm2d(output_channels),
                nn.ReLU(inplace=True),
            )
        else:  # Final Layer
            return nn.Sequential(
                nn.ConvTranspose2d(input_channels, output_channels, kernel_size, stride),
                nn.Tanh(),
            )

    def unsqueeze_noise(self, noise):
        """Noise (n_samples, z_dim) -> (n_samples, z_dim, 1, 1): a 1x1 image with z_dim channels."""
        return noise.view(len(noise), self.z_dim, 1, 1)

    def forward(self, noise):
        x = self.unsqueeze_noise(noise)
        return self.gen(x)


def get_noise(n_samples, z_dim, device="cpu"):
    """Noise vectors of shape (n_samples, z_dim) from the normal distribution."""
    return torch.randn(n_samples, z_dim, device=device)


class Discriminator(nn.Module):
    """28x28 image -> one logit. Spatial size: 28 -> 13 -> 5 -> 1."""

    def __init__(self, im_chan=1, hidden_dim=16):
        super().__init__()
        self.disc = nn.Sequential(
            self.make_disc_block(im_chan, hidden_dim),               # 16 x 13 x 13
            self.make_disc_block(hidden_dim, hidden_dim * 2),        # 32 x 5 x 5
            self.make_disc_block(hidden_dim * 2, 1, final_layer=True),  # 1 x 1 x 1
        )

    def make_disc_block(self, input_channels, output_channels, kernel_size=4, stride=2, final_layer=False):
        """A convolution, then BatchNorm and LeakyReLU(0.2), except for the last block (a bare logit)."""
        if not final_layer:
            return nn.Sequential(
                nn.Conv2d(input_channels, output_channels, kernel_size, stride),
                nn.BatchNorm2d(output_channels),
                nn.LeakyReLU(0.2, inplace=True),
            )
        else:  # Final Layer
            return nn.Sequential(
                nn.Conv2d(input_channels, output_channels, kernel_size, stride),
            )

    def forward(self, image):
        disc_pred = self.disc(image)
        return disc_pred.view(len(disc_pred), -1)


def weights_init(m):
    # The course draws BatchNorm weights around 0 (the DCGAN tutorial: around 1).
    common.weights_init(m, bn_mean=0.0)


def main(argv=None):
    args = parse_args(argv)
    outdir = common.prepare_outdir(args, "dcgan_mnist")
    device = common.pick_device(args.device)
    print("Random Seed:", args.seed, "| device:", device)
    common.seed_everything(args.seed, args.cudnn_benchmark)
    z_dim = args.z_dim

    if args.generate:
        ckpt = common.load_checkpoint(outdir)
        s = ckpt["settings"]
        gen = Generator(s["z_dim"], hidden_dim=s["hidden_dim"]).to(device)
        gen.load_state_dict(ckpt["netG"])
        common.generate(gen, s["z_dim"], (s["z_dim"],), args, outdir)
        return

    criterion = nn.BCEWithLogitsLoss()
    # MNIST with ToTensor() and Normalize((0.5,), (0.5,)): pixels in [-1, 1]
    data = common.fake_images(args.fake_data, (1, 28, 28)) if args.fake_data else \
        common.mnist(args.dataroot, stream=args.stream)
    data = common.data_on_device(data, device)
    print(f"{data['n']} training images, {common.n_batches(data, args.batch_size)} batches per epoch")

    gen = Generator(z_dim, hidden_dim=args.hidden_dim).to(device)
    gen_opt = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), fused=True)
    disc = Discriminator(hidden_dim=args.disc_hidden_dim).to(device)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), fused=True)
    gen = gen.apply(weights_init)
    disc = disc.apply(weights_init)
    print(gen)
    print(disc)
    # Opt-in speed-ups (--amp, --channels-last, --compile): off by default, they change the numerics
    gen, disc = common.speed_up(gen, args, device), common.speed_up(disc, args, device)

    # 100 fixed noise vectors, to watch the generator learn
    fixed_noise = get_noise(100, z_dim, device=device)

    history = common.new_history(["loss_d", "loss_g"])
    settings = common.math_settings(args, data["id"])
    start_epoch, start_iter = 0, 0
    if args.resume:  # both nets and optimizers, the position, fixed noise, history, every RNG state
        start_epoch, start_iter, fixed_noise, history = common.resume(
            outdir, settings, gen, disc, gen_opt, disc_opt, device)
        if start_epoch >= args.epochs:
            print(f"This run has already trained {start_epoch} epochs (--epochs {args.epochs}): nothing to "
                  f"do. Give a larger --epochs to train on.")
            return
        print(f"Resuming at epoch {start_epoch}, iteration {start_iter}")
    else:
        common.save_grid(common.first_images(data, args, 100), os.path.join(outdir, "real_images.png"), nrow=10)
        with torch.no_grad():
            common.save_grid(gen(fixed_noise), os.path.join(outdir, "samples", "epoch_0000.png"), nrow=10)

    def save_checkpoint(epoch, iteration):
        common.save_checkpoint(outdir, settings, gen, disc, gen_opt, disc_opt,
                               epoch, iteration, fixed_noise, history)

    pending = []  # this epoch's numbers, still on the device
    cur_step = len(history["epoch"])
    common.catch_stop_signals()  # Ctrl-C / SIGTERM: finish the iteration, save, exit
    t_start = time.time()
    for epoch in range(start_epoch, args.epochs):
        start = start_iter if epoch == start_epoch else 0
        # Dataloader returns the batches
        for i, real in common.progress(common.batches(data, args, epoch, start, device),
                                       data, args, epoch, start):
            cur_batch_size = len(real)

            ## Update discriminator ##
            disc_opt.zero_grad()
            fake_noise = get_noise(cur_batch_size, z_dim, device=device)
            with torch.no_grad():  # G is not trained here: no graph through it (the course builds one)
                fake = gen(fake_noise)
            disc_fake_pred = disc(fake.detach())
            disc_fake_loss = criterion(disc_fake_pred, torch.zeros_like(disc_fake_pred))
            disc_real_pred = disc(real)
            disc_real_loss = criterion(disc_real_pred, torch.ones_like(disc_real_pred))
            disc_loss = (disc_fake_loss + disc_real_loss) / 2
            # Update gradients
            disc_loss.backward()
            # Update optimizer
            disc_opt.step()

            ## Update generator ##
            gen_opt.zero_grad()
            fake_noise_2 = get_noise(cur_batch_size, z_dim, device=device)
            fake_2 = gen(fake_noise_2)
            disc.requires_grad_(False)  # only G's gradients are used in this step
            disc_fake_pred = disc(fake_2)
            gen_loss = criterion(disc_fake_pred, torch.ones_like(disc_fake_pred))
            gen_loss.backward()
            disc.requires_grad_(True)
            gen_opt.step()

            # Keep track of the losses (on the device until the next print)
            common.record(pending, epoch, i, disc_loss, gen_loss)
            cur_step += 1

            ## Visualization code ##
            if cur_step % display_step == 0:
                common.flush(history, pending)
                mean_generator_loss = sum(history["loss_g"][-display_step:]) / display_step
                mean_discriminator_loss = sum(history["loss_d"][-display_step:]) / display_step
                common.log(f"Step {cur_step}: Generator loss: {mean_generator_loss}, "
                           f"discriminator loss: {mean_discriminator_loss}")
            stop = common.stop_requested()  # Ctrl-C or SIGTERM arrived: save and exit
            if cur_step % args.checkpoint_every == 0 or stop:
                common.flush(history, pending)
                save_checkpoint(epoch, i + 1)
            if stop:
                common.write_history_csv(history, os.path.join(outdir, "history.csv"))
                common.exit_after_stop(epoch, i + 1, outdir)

        # After each epoch: the generator's output on the fixed noise, the plots, a checkpoint
        common.flush(history, pending)
        common.epoch_line(epoch, args, data)
        with torch.no_grad():
            fake = gen(fixed_noise).cpu()
        common.save_grid(fake, os.path.join(outdir, "samples", f"epoch_{epoch + 1:04d}.png"), nrow=10)
        save_checkpoint(epoch + 1, 0)
        common.write_epoch_outputs(outdir, history, ["loss_d", "loss_g"], [])
        common.real_vs_fake(common.first_images(data, args, 100), fake,
                            os.path.join(outdir, "real_vs_fake.png"), nrow=10)
        if common.stop_requested():
            common.exit_after_stop(epoch + 1, 0, outdir)

    common.summary(outdir, time.time() - t_start, history, ["loss_d", "loss_g"])


if __name__ == "__main__":
    common.run(main)
