"""--ema: an exponential moving average of the generator's weights, kept beside the training.

The training is untouched: after every iteration the average moves a little towards the live
generator, `average = beta * average + (1 - beta) * live`. beta follows StyleGAN2-ADA's rule
(G_ema): a half-life of HALF_LIFE_IMAGES images for a batch of 32, scaled with the batch, and
ramped up as RAMP_UP of the images seen so far, so that early on the average forgets its random
start quickly. Adapted to these lessons' runs of a few thousand iterations: StyleGAN2-ADA's
half-life is 10,000 images at batch 32, long against a run that sees 200,000 images in all and
whose generator is still improving fast; here it is 1,000 (about 30 iterations at the lessons'
batches), which measured better than 5,000 in each of six runs (QUALITY.md).

BatchNorm: the average is sampled as the tutorials sample the generator, in training mode, so
each batch is normalised by its own statistics; the running statistics are copied from the live
generator (as StyleGAN2-ADA does), and none of them is read.

    average = Average(netG, batch_size)   # a copy of G, its weights then averaged
    average.update(netG)                  # after each iteration (Run.step)
    average.net                           # the averaged generator, to sample or measure
    average.state_dict() / load_state_dict(state)   # in every checkpoint: exact resume
"""
import copy

import torch

from .device import bare

HALF_LIFE_IMAGES = 1_000  # at batch 32, scaled with the batch (StyleGAN2-ADA: 10,000)
RAMP_UP = 0.05  # the half-life is at most this share of the images seen so far (StyleGAN2-ADA's)


class Average:
    def __init__(self, netG, batch_size):
        self.net = copy.deepcopy(bare(netG)).requires_grad_(False)
        self.batch_size, self.images = batch_size, 0
        self.half_life = HALF_LIFE_IMAGES * batch_size / 32

    def beta(self):
        """How much of the average the next update keeps (the live generator gets the rest)."""
        half_life = min(self.half_life, self.images * RAMP_UP)
        return 0.5 ** (self.batch_size / max(half_life, 1e-8))

    def update(self, netG):
        """One iteration more of the live generator netG: a few kernels over its weights (no host sync)."""
        live = bare(netG)
        self.images += self.batch_size
        with torch.no_grad():
            torch._foreach_lerp_(list(self.net.parameters()), list(live.parameters()), 1 - self.beta())
            for mine, theirs in zip(self.net.buffers(), live.buffers()):
                mine.copy_(theirs)

    def state_dict(self):
        return {"weights": self.net.state_dict(), "images": self.images}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["weights"])
        self.images = state["images"]
