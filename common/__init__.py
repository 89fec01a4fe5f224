"""What the three GAN scripts share, one module per concern. The scripts use these names:

  cli          add_common_args and the flag types (positive_int, ...)
  device       seed_everything, pick_device, init_distributed, ddp, weights_init, speed_up
  data         DataLoader (the dataset decoded once, batched on the device), check_image_folder, mnist_errors
  run          Run: one run's folder, settings, history, checkpoints, stop signals, progress and pictures
  errors       run_script: a user's mistake as one sentence and an exit code, no traceback
  quality      (behind Run) the MNIST reference classifier and the Frechet distance of its features

checkpoints, pictures and sampling are what Run uses to save, draw and --generate.
"""
from .cli import add_common_args, beta, nonnegative_int, positive_float, positive_int
from .data import DataLoader, check_image_folder, mnist_errors
from .device import ddp, init_distributed, pick_device, seed_everything, speed_up, weights_init
from .errors import Diverged, UserError, run_script
from .run import Run
