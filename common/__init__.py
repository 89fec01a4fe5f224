"""What the three GAN scripts share, one module per concern. The scripts use these names:

  cli          ArgumentParser (add_argument(..., changes_math=False)), add_common_args, flag types
  device       seed_everything, pick_device, init_distributed, ddp, weights_init, speed_up
  data         DataLoader (the dataset decoded once, batched on the device), export_real,
               check_image_folder, mnist_errors
  run          Run: one training run's record (folder, settings, history, checkpoints, pictures)
  sampling     generate: --generate N from a run's generator
  quality      evaluate: --evaluate N, FD and digit shares by a reference classifier
  errors       run_script: a user's mistake as one sentence and an exit code, no traceback

Behind them, each readable alone: outdir (one command at a time in --outdir), checkpoints,
history (the numbers, kept on the device), signals (Ctrl-C), progress (bar and ETA), pictures.
"""
from .cli import ArgumentParser, add_common_args, beta, nonnegative_int, positive_float, positive_int
from .data import DataLoader, check_image_folder, export_real, mnist_errors
from .device import ddp, init_distributed, pick_device, seed_everything, speed_up, weights_init
from .errors import Diverged, UserError, run_script
from .quality import evaluate
from .run import Run
from .sampling import generate
