"""DCGAN on celebrity faces: the official PyTorch "DCGAN Tutorial" as one script.

Follows https://pytorch.org/tutorials/beginner/dcgan_faces_tutorial.html: the same dataset and
transform, networks, initialisation, losses, optimizers, defaults and training loop, in the same
order and with the same names. What differs is only mechanics that do not change the math:
common.DataLoader decodes the images once and batches them on the device, numbers stay on the
device between log lines, and common.Run saves, draws and resumes the run bit for bit.

    python dcgan_celeba.py --dataroot data/celeba            # data/celeba/img_align_celeba/*.jpg
    python dcgan_celeba.py --fake-data --epochs 1            # a smoke run with no dataset
"""
import signal
signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C while torch loads: stop at once, no traceback

import argparse  # noqa: E402 (the line above must come first)

import torch
import torch.nn as nn
import torch.optim as optim
import torchvision.datasets as dset
import torchvision.transforms as transforms

import common

# Number of channels in the training images. For color images this is 3
nc = 3

# A frame of the animation of G's progress every this many iterations, and one at the last
frame_every = 500


def parse_args(argv=None):
    parser = common.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(parser, script="dcgan_celeba", dataroot="data/celeba", epochs=5, batch_size=128,
                           workers=2, seed=999)
    parser.add_argument("--image-size", type=common.positive_int, default=64,
                        help="spatial size of training images (the tutorial's nets make 64x64 only)")
    parser.add_argument("--nz", type=common.positive_int, default=100, help="size of z latent vector")
    parser.add_argument("--ngf", type=common.positive_int, default=64, help="size of feature maps in generator")
    parser.add_argument("--ndf", type=common.positive_int, default=64, help="size of feature maps in discriminator")
    parser.add_argument("--lr", type=common.positive_float, default=0.0002, help="learning rate for optimizers")
    parser.add_argument("--beta1", type=common.beta, default=0.5, help="beta1 hyperparameter for Adam optimizers")
    # (--ngpu itself is not math: how many GPUs DataParallel then splits each batch over is, and Run checks that)
    parser.add_argument("--ngpu", type=common.nonnegative_int, default=1, changes_math=False,
                        help="number of GPUs available; 0 trains on the CPU, >1 uses nn.DataParallel")
    parser.add_argument("--export-real", type=common.positive_int, metavar="N", changes_math=False,
                        help="train nothing: write N training images as the training sees them (64x64 PNG) "
                             "into <outdir>/real/, the real side of an FID against --generate N")
    parser.add_argument("--inception-weights", type=common.cli.folder, metavar="PATH", changes_math=False,
                        help="FID's Inception weights (--evaluate, --eval-every; default: torch-fidelity's file in "
                             "torch's hub cache, downloaded at first use where there is a network)")
    args = parser.parse_args(argv)
    if args.image_size != 64:
        parser.error(f"argument --image-size: the tutorial's networks make 64x64 images only, got "
                     f"{args.image_size}; leave --image-size at 64 (images of any size are resized to it).")
    return args


def load_data(args, device):
    """The tutorial's dataset and dataloader; --fake-data: random images through the same transform."""
    image_size = args.image_size
    if not args.fake_data:
        common.check_image_folder(args.dataroot)  # a wrong layout: one sentence saying what to do
        # We can use an image folder dataset the way we have it setup.
        # Create the dataset
        dataset = dset.ImageFolder(root=args.dataroot,
                                   transform=transforms.Compose([
                                       transforms.Resize(image_size),
                                       transforms.CenterCrop(image_size),
                                       transforms.ToTensor(),
                                       transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                                   ]))
    else:  # a smoke run with no dataset (as pytorch/examples' --dataset fake)
        dataset = dset.FakeData(args.fake_data, (nc, image_size, image_size), transform=transforms.Compose([
            transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    # Create the dataloader: the images decoded once (cached beside them) and batched on the device
    return common.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                             device=device, seed=args.seed, cache_dirs=[args.dataroot, args.outdir],
                             stream=args.stream, channels_last=args.channels_last)


# Generator Code
class Generator(nn.Module):
    def __init__(self, ngpu, nz=100, ngf=64):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            # state size. (ngf*4) x 8 x 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh()
            # state size. (nc) x 64 x 64
        )

    def forward(self, input):
        return self.main(input)


class Discriminator(nn.Module):
    def __init__(self, ngpu, ndf=64):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            # input is (nc) x 64 x 64
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 32 x 32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*2) x 16 x 16
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*4) x 8 x 8
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*8) x 4 x 4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid()
        )

    def forward(self, input):
        return self.main(input)


def create_models(args, device, world_size):
    """The tutorial's netG and netD, initialised, with the opt-in speed-ups and DDP applied."""
    # Create the generator
    netG = Generator(args.ngpu, args.nz, args.ngf).to(device)
    # Handle multi-GPU if desired
    if (device.type == 'cuda') and (args.ngpu > 1) and world_size == 1:
        netG = nn.DataParallel(netG, list(range(min(args.ngpu, torch.cuda.device_count()))))
    # Apply the ``weights_init`` function to randomly initialize all weights
    #  to ``mean=0``, ``stdev=0.02``.
    netG.apply(common.weights_init)
    print(netG)

    # Create the Discriminator
    netD = Discriminator(args.ngpu, args.ndf).to(device)
    if (device.type == 'cuda') and (args.ngpu > 1) and world_size == 1:
        netD = nn.DataParallel(netD, list(range(min(args.ngpu, torch.cuda.device_count()))))
    netD.apply(common.weights_init)
    print(netD)

    # Opt-in speed-ups (--amp, --channels-last, --compile): off by default, they change the numerics
    speed = dict(amp=args.amp, channels_last=args.channels_last, compile=args.compile)
    netG, netD = common.speed_up(netG, device, **speed), common.speed_up(netD, device, **speed)
    if world_size > 1:  # torchrun: gradients averaged over the processes (see common.ddp on BatchNorm)
        netG, netD = common.ddp(netG, device), common.ddp(netD, device)
    return netG, netD


def main(argv=None):
    args = parse_args(argv)
    # Decide which device we want to run on (--ngpu 0 forces the CPU, as in the tutorial)
    device = common.pick_device(args.device, args.ngpu)
    # Under torchrun: one process per device, DistributedDataParallel (rank 0 writes the outputs)
    rank, world_size = common.init_distributed(device)
    print("Random Seed:", args.seed, "| device:", device, f"| {world_size} processes" if world_size > 1 else "")
    # Each process its own noise; DDP gives every process rank 0's initial weights
    common.seed_everything(args.seed + rank, args.cudnn_benchmark)

    if args.generate:  # train nothing: N images from the generator of the run in --outdir
        return common.generate("dcgan_celeba", args, lambda s: Generator(0, s["nz"], s["ngf"]), device)

    dataloader = load_data(args, device)
    if args.export_real:  # train nothing: N training images, for an FID against --generate N (see README)
        return common.export_real(dataloader, args.export_real, args.outdir)
    if args.evaluate:  # train nothing: FID of the run in --outdir against the training images (common/fid.py)
        return common.evaluate("dcgan_celeba", args, lambda s: Generator(0, s["nz"], s["ngf"]), dataloader, device)

    netG, netD = create_models(args, device, world_size)

    # Initialize the ``BCELoss`` function
    criterion = nn.BCELoss()

    # Create batch of latent vectors that we will use to visualize
    #  the progression of the generator
    fixed_noise = torch.randn(64, args.nz, 1, 1, device=device)

    # Establish convention for real and fake labels during training
    real_label = 1.
    fake_label = 0.

    # Setup Adam optimizers for both G and D (fused: one kernel for all parameters, same math)
    optimizerD = optim.Adam(netD.parameters(), lr=args.lr, betas=(args.beta1, 0.999), fused=True)
    optimizerG = optim.Adam(netG.parameters(), lr=args.lr, betas=(args.beta1, 0.999), fused=True)

    # The run's record: --outdir (one run at a time), checkpoints, history and pictures. A new run
    # writes the training images and epoch 0; --resume restores everything saved, fixed_noise too
    run = common.Run("dcgan_celeba", args, netG, netD, optimizerG, optimizerD, fixed_noise, dataloader,
                     losses=["loss_d", "loss_g"], scores=["D_x", "D_G_z1", "D_G_z2"], real_grid="training_images.png",
                     frames="kept")  # progress.gif: the frames kept below, the tutorial's img_list
    fixed_noise = run.fixed_noise

    # Training Loop

    # Lists to keep track of progress (the run keeps them: run.keep_frame, run.step)
    iters = run.iterations  # (0, or the iterations done before a --resume)

    print("Starting Training Loop...")
    # For each epoch (from the saved one on --resume)
    for epoch in run.epochs():
        # For each batch in the dataloader (a resumed epoch starts where it stopped)
        for i, data in enumerate(dataloader, dataloader.start):
            ############################
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            ###########################
            ## Train with all-real batch
            netD.zero_grad()
            # Format batch
            real_cpu = data[0].to(device)
            b_size = real_cpu.size(0)
            label = torch.full((b_size,), real_label, dtype=torch.float, device=device)
            # Forward pass real batch through D
            output = netD(real_cpu).view(-1)
            # Calculate loss on all-real batch
            errD_real = criterion(output, label)
            # Calculate gradients for D in backward pass
            errD_real.backward()
            D_x = output.mean()  # kept on the device: .item() here would wait for the GPU

            ## Train with all-fake batch
            # Generate batch of latent vectors
            noise = torch.randn(b_size, args.nz, 1, 1, device=device)
            # Generate fake image batch with G
            fake = netG(noise)
            label.fill_(fake_label)
            # Classify all fake batch with D
            output = netD(fake.detach()).view(-1)
            # Calculate D's loss on the all-fake batch
            errD_fake = criterion(output, label)
            # Calculate the gradients for this batch, accumulated (summed) with previous gradients
            errD_fake.backward()
            D_G_z1 = output.mean()
            # Compute error of D as sum over the fake and the real batches
            errD = errD_real + errD_fake
            # Update D
            optimizerD.step()

            ############################
            # (2) Update G network: maximize log(D(G(z)))
            ###########################
            netG.zero_grad()
            label.fill_(real_label)  # fake labels are real for generator cost
            # Since we just updated D, perform another forward pass of all-fake batch through D.
            # D's own gradients are not needed here (the tutorial computes and then discards them).
            netD.requires_grad_(False)
            output = netD(fake).view(-1)
            # Calculate G's loss based on this output
            errG = criterion(output, label)
            # Calculate gradients for G
            errG.backward()
            netD.requires_grad_(True)
            D_G_z2 = output.mean()
            # Update G
            optimizerG.step()

            # Output training stats
            if i % 50 == 0:
                run.log('[%d/%d][%d/%d]\tLoss_D: %.4f\tLoss_G: %.4f\tD(x): %.4f\tD(G(z)): %.4f / %.4f'
                        % (epoch, args.epochs, i, len(dataloader),
                           errD.item(), errG.item(), D_x.item(), D_G_z1.item(), D_G_z2.item()))

            # Check how the generator is doing by saving G's output on fixed_noise (before run.step: a stop
            # there saves this frame with the checkpoint)
            if (iters % frame_every == 0) or ((epoch == args.epochs-1) and (i == len(dataloader)-1)):
                with torch.no_grad():
                    fake = netG(fixed_noise).detach().cpu()
                run.keep_frame(fake, iters)  # img_list.append(vutils.make_grid(fake, padding=2, normalize=True))

            iters += 1

            # Save Losses for plotting later (and checkpoints; Ctrl-C saves and exits here)
            run.step(i, errD, errG, D_x, D_G_z1, D_G_z2)

        # Check how the generator is doing by saving G's output on fixed_noise
        with torch.no_grad():
            fake = netG(fixed_noise).detach().cpu()
        run.end_epoch(fake)  # its grid, a checkpoint, the plots and the GIF

    run.finish()


if __name__ == "__main__":
    common.run_script(main)
