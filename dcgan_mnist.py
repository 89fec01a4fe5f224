"""A first DCGAN on MNIST digits: the Coursera GAN course's "Deep Convolutional GAN" as one script.

Follows the assignment of course 1, week 2 (GANs Specialization, DeepLearning.AI): the same
generator and discriminator blocks, initialisation, BCEWithLogits loss, Adam settings, batch
size and display step, in the same order and with the same names. What differs is only
mechanics that do not change the math: common.DataLoader holds the digits as one tensor on the
device and batches them through a seeded permutation, the discriminator step does not build
G's graph it would throw away, numbers stay on the device between log lines, and common.Run
saves, draws and resumes the run bit for bit.

    python dcgan_mnist.py                            # MNIST is downloaded into --dataroot
    python dcgan_mnist.py --fake-data --epochs 1     # a smoke run with no dataset
"""
import signal
signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C while torch loads: stop at once, no traceback

import argparse  # noqa: E402 (the line above must come first)

import torch
import torch.nn as nn
from torchvision import transforms
from torchvision.datasets import MNIST, FakeData

import common

display_step = 500  # print the mean losses every this many steps


def parse_args(argv=None):
    parser = common.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(parser, script="dcgan_mnist", dataroot="data", epochs=50, batch_size=128, workers=0,
                           seed=0, measured=True)
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
    device = common.pick_device(args.device)
    print("Random Seed:", args.seed, "| device:", device)
    common.seed_everything(args.seed, args.cudnn_benchmark)
    z_dim, batch_size, lr = args.z_dim, args.batch_size, args.lr

    if args.generate:  # train nothing: N images from the generator of the run in --outdir
        return common.generate("dcgan_mnist", args, lambda s: Generator(s["z_dim"], hidden_dim=s["hidden_dim"]),
                               device)

    criterion = nn.BCEWithLogitsLoss()
    # You can tranform the image values to be between -1 and 1 (the range of the tanh activation)
    transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.5,), (0.5,)),
    ])
    if args.fake_data:  # a smoke run with no dataset: random images through the same transform
        dataset = FakeData(args.fake_data, (1, 28, 28), transform=transform)
    else:
        with common.mnist_errors(args.dataroot):  # missing or damaged files: one sentence saying what to do
            dataset = MNIST(args.dataroot, train=True, download=True, transform=transform)
    # The digits held as one tensor on the device, reshuffled each epoch, batched like DataLoader's
    dataloader = common.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=args.workers,
                                   device=device, seed=args.seed, stream=args.stream,
                                   channels_last=args.channels_last)
    if args.evaluate:  # train nothing: FD and digit shares of the run in --outdir (common/quality.py)
        return common.evaluate("dcgan_mnist", args, lambda s: Generator(s["z_dim"], hidden_dim=s["hidden_dim"]),
                               dataloader, device)

    gen = Generator(z_dim, hidden_dim=args.hidden_dim).to(device)
    gen_opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=(args.beta1, args.beta2), fused=True)
    disc = Discriminator(hidden_dim=args.disc_hidden_dim).to(device)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=(args.beta1, args.beta2), fused=True)
    gen = gen.apply(weights_init)
    disc = disc.apply(weights_init)
    print(gen)
    print(disc)
    # Opt-in speed-ups (--amp, --channels-last, --compile): off by default, they change the numerics
    speed = dict(amp=args.amp, channels_last=args.channels_last, compile=args.compile)
    gen, disc = common.speed_up(gen, device, **speed), common.speed_up(disc, device, **speed)

    # 100 fixed noise vectors, to watch the generator learn
    fixed_noise = get_noise(100, z_dim, device=device)
    # The run's record: --outdir (one run at a time), checkpoints, history and pictures. A new run
    # writes the real images and epoch 0; --resume restores everything saved, fixed_noise too
    run = common.Run("dcgan_mnist", args, gen, disc, gen_opt, disc_opt, fixed_noise, dataloader,
                     losses=["loss_d", "loss_g"], nrow=10)
    fixed_noise = run.fixed_noise

    for epoch in run.epochs():  # from the saved epoch on --resume
        # Dataloader returns the batches (a resumed epoch starts where it stopped)
        for i, (real, _) in enumerate(dataloader, dataloader.start):
            cur_batch_size = len(real)
            real = real.to(device)

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

            # Keep track of the losses (on the device; checkpoints; Ctrl-C saves and exits here)
            cur_step = run.step(i, disc_loss, gen_loss)

            ## Visualization code ##
            if cur_step % display_step == 0:
                mean_discriminator_loss, mean_generator_loss = run.means(["loss_d", "loss_g"], display_step)
                run.log(f"Step {cur_step}: Generator loss: {mean_generator_loss}, "
                        f"discriminator loss: {mean_discriminator_loss}")

        # After each epoch: the generator's output on the fixed noise
        with torch.no_grad():
            fake = gen(fixed_noise)
        run.end_epoch(fake)  # its grid, a checkpoint, the plots and the GIF

    run.finish()


if __name__ == "__main__":
    common.run_script(main)
