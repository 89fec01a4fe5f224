"""The first decode of an image folder, timed, for the version of the project in a given checkout.

    git worktree add /tmp/old dce1722                   # the version before the decode was reworked
    python benchmarks/decode_time.py /tmp/old  /work/data/faces10k
    python benchmarks/decode_time.py .         /work/data/faces10k

Each call decodes the folder once with that checkout's `common.data.decode_each`, as
dcgan_celeba.py does at its first start (the tutorial's transform, Resize and CenterCrop to 64),
and prints the seconds, the images per second, the peak RSS and the open-file limit it ran under.
Alternate the two, a few times each: the machine's speed drifts. (Versions before 8ba7a60 took
the number of workers; they are given 2, dcgan_celeba.py's default --workers.)
"""
import inspect
import os
import resource
import sys
import time

repo, folder = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.abspath(repo))
import torchvision.datasets as dset  # noqa: E402
import torchvision.transforms as transforms  # noqa: E402

import common.data as data  # noqa: E402  (the checkout's, not this one's)

dataset = dset.ImageFolder(folder, transform=transforms.Compose([
    transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
per_image, _ = data.split_transform(dataset.transform)
files, _ = data.folder_files(dataset)
started = time.monotonic()
if "workers" in inspect.signature(data.decode_each).parameters:  # (the old signature)
    images, labels, bad = data.decode_each(dataset, per_image, 2, files)
else:
    images, labels, bad = data.decode_each(dataset, per_image, files)
seconds = time.monotonic() - started
print(f"{os.path.abspath(repo)}: {len(images)} images in {seconds:.1f} s ({len(images) / seconds:.0f}/s), "
      f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
      f"open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
