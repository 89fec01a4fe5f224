"""DataLoader: the tutorial's dataset, decoded once and batched on the training device.

The script builds its dataset exactly as its tutorial does (ImageFolder or MNIST with the
tutorial's transform) and hands it to DataLoader, which it then iterates like torch's own.
The transform is split where it stops being per-image work:

  Resize / CenterCrop   applied once per image, kept as uint8 (CelebA: cached in a file)
  ToTensor / Normalize  a table of what they make of each of the 256 byte values, made once on
                        the CPU by the dataset's own ToTensor and Normalize and looked up for
                        whole batches on the training device: bit for bit the same on any device

Each epoch's order comes from (seed, epoch), so a resumed epoch can start at batch k with the
same order; under torchrun every process takes its share of each batch. With stream=True the
dataset itself is read every epoch (the tutorial's path: workers decode the files), through the
same order and the same batches. A transform with other steps (a RandomHorizontalFlip, say) is
read that way too, each image's random draws seeded by (seed, epoch, image), so that runs repeat.
"""
import contextlib
import copy
import glob
import hashlib
import math
import os
import pickle
import random
import time
import warnings
import zlib

import numpy as np
import torch
import torchvision.datasets as dset
import torchvision.transforms as transforms

from .checkpoints import atomic_save
from .device import rank_and_world, seed_worker
from .errors import UserError, cannot_write, first_line
from .outdir import claim, remove_temporaries, replaced_folder
from .pictures import plural, save_png
from .signals import deaf_children, signals_held

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CELEBA_URL = "https://drive.google.com/drive/folders/0B7EVK8r0v71pTUZsaXdaSnZBZzg (img_align_celeba.zip)"
CELEBA_LAYOUT = "<dataroot>/img_align_celeba/000001.jpg, 000002.jpg, ..."
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataLoader:
    """Iterates like torch.utils.data.DataLoader(dataset, batch_size, shuffle=True): (images,
    labels) batches, the images on `device` as the dataset's transform makes them.

    set_epoch(epoch, start) picks the epoch's order (from seed and epoch) and the batch it starts
    at; `start` is that batch, for the tutorial's enumerate(dataloader, ...).
    """

    def __init__(self, dataset, batch_size, shuffle=True, num_workers=0, *, device, seed,
                 cache_dirs=(), stream=False, channels_last=False):
        self.batch_size, self.shuffle, self.num_workers = batch_size, shuffle, num_workers
        self.device, self.seed, self.channels_last = device, seed, channels_last
        self.rank, self.world = rank_and_world()
        if batch_size % self.world:
            raise UserError(f"--batch-size {batch_size} is the batch of all {self.world} processes together "
                            f"and must divide evenly among them; use a multiple of {self.world}.")
        split = split_transform(dataset.transform)
        if split is None:
            steps = ", ".join(type(t).__name__ for t in steps_of(dataset.transform))
            print(f"notice: the dataset's transform ({steps}) has steps that cannot be done once and kept, so every "
                  f"image is read and transformed every epoch, as with --stream (slower).")
        self.splittable = split is not None
        self.per_image, self.to_tensor = split or ([], [])
        self.dataset, self.images, self.labels, self.table = None, None, None, None
        folder = folder_files(dataset)  # an image folder's files, read once (None for other datasets)
        self.files = zlib.compress(os.fsencode(file_list(folder))) if folder else None  # (for what_changed)
        if stream or split is None:
            self.dataset, self.id = Readable(dataset, seed if split is None else None), data_id(dataset, None, folder)
            self.n = len(dataset)
        else:
            self.images, self.labels = decode(dataset, self.per_image, cache_dirs, folder,
                                              write_cache=self.rank == 0)  # (under torchrun: one writer)
            self.id = data_id(dataset, self.images, folder)
            self.n = len(self.images)
            self.images = on_device(self.images, device)
            self.labels = self.labels.to(self.images.device)
            self.table = pixel_table(self.to_tensor, self.images.shape[1]).to(device)
        self.epoch, self.start = 0, 0
        print(f"{plural(self.n, 'training image')}, {plural(len(self), 'batch', 'batches')} per epoch")

    def __len__(self):
        """Batches per epoch; the last may be smaller. Under torchrun an incomplete last batch is
        dropped, so that every process gets an equal share of every batch."""
        return math.ceil(self.n / self.batch_size) if self.world == 1 else self.n // self.batch_size

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = epoch, start

    def order(self, epoch):
        """The order of the images in one epoch.

        The tutorial's DataLoader(shuffle=True) draws a fresh permutation each epoch from the global
        RNG. Drawing it from (seed, epoch) instead gives the same kind of shuffle, and a resumed run
        can redraw it exactly without storing anything.
        """
        if not self.shuffle:
            return torch.arange(self.n)
        seed = (self.seed * 1_000_003 + epoch) % 2**64
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))

    def __iter__(self):
        order, bs, nb = self.order(self.epoch), self.batch_size, len(self)
        if self.world > 1:  # every process draws the same order and takes its share of each batch
            bs = bs // self.world
            order = order[:nb * self.batch_size].view(nb, self.world, bs)[:, self.rank].reshape(-1)
        if self.images is not None:
            order = order.to(self.images.device)
            pinned = self.images.device.type == "cpu" and self.device.type == "cuda"  # (too big for the GPU)
            for i in range(self.start, nb):
                index = order[i * bs:(i + 1) * bs]
                yield self.to_device(rows(self.images, index, pinned)), self.labels[index]
        else:
            self.dataset.epoch = self.epoch  # the workers get a copy of it: each epoch a new DataLoader
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=[order[i * bs:(i + 1) * bs].tolist() for i in range(self.start, nb)],
                num_workers=self.num_workers, worker_init_fn=seed_worker, pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(self.seed + self.epoch))  # leaves the global RNG alone
            for images, labels in from_workers(loader, or_else="use --workers 0 (the images are then read here)"):
                yield self.to_device(images), labels

    def to_device(self, images):
        """A batch onto the device; uint8 pixels through ToTensor + Normalize there, as one lookup."""
        images = images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
            images = self.table[channel, images.long()]  # table[c, v]: what they make of value v in channel c
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def first_images(self, k):
        """The first k images of epoch 0's order, as the transform makes them, on the CPU."""
        order = self.order(0)[:k]
        if self.images is not None:
            return self.to_device(self.images[order.to(self.images.device)]).float().cpu().contiguous()
        self.dataset.epoch = 0
        return torch.stack([self.dataset[i][0] for i in order.tolist()])

    def uint8_images(self):
        """Every image after the per-image transform, as uint8 on the CPU, in file order, and the labels."""
        if self.images is not None:
            return self.images.cpu(), self.labels.cpu()
        return decode(self.dataset.dataset, self.per_image, cache_dirs=(), folder=folder_files(self.dataset.dataset))


def export_real(dataloader, n, outdir):
    """--export-real N: N training images exactly as the training sees them (after the per-image
    transform, from the decoded cache; PNG keeps every uint8 value) into <outdir>/real/ (what was
    there is replaced), in epoch 0's order: the real side of an FID against --generate N."""
    if not dataloader.splittable:
        raise UserError("--export-real writes the images as Resize and CenterCrop make them, and the dataset's "
                        "transform has other steps; export with the tutorial's transform.")
    folder = os.path.join(outdir, "real")
    with claim(outdir), replaced_folder(folder) as tmp:
        images, _ = dataloader.uint8_images()
        order = dataloader.order(0)[:n]
        if len(order) < n:
            print(f"notice: --export-real {n} asked for, but the dataset holds {plural(len(order), 'image')}: "
                  f"writing those.")
        for k, index in enumerate(order.tolist()):
            save_png(images[index], os.path.join(tmp, f"{k:05d}.png"))
        print(f"Wrote {len(order)} training images ({'x'.join(map(str, images.shape[1:]))}, as the training "
              f"sees them) to {folder}/")


def steps_of(transform):
    return list(transform.transforms) if isinstance(transform, transforms.Compose) else [transform]


def split_transform(transform):
    """Split the dataset's transform into the per-image part (Resize, CenterCrop) and ToTensor +
    Normalize; None for a transform with other steps, which DataLoader then applies as it is."""
    steps = steps_of(transform)
    kinds = [type(t) for t in steps]
    if not {transforms.ToTensor, transforms.PILToTensor} & set(kinds):
        raise UserError(f"the dataset's transform ({', '.join(k.__name__ for k in kinds)}) does not make tensors; "
                        f"add transforms.ToTensor() (and Normalize) as the tutorial does.")
    known = [transforms.Resize, transforms.CenterCrop, transforms.ToTensor, transforms.Normalize]
    positions = [known.index(k) if k in known else -1 for k in kinds]
    if -1 in positions or positions != sorted(set(positions)) or transforms.ToTensor not in kinds:
        return None
    cut = kinds.index(transforms.ToTensor)
    return steps[:cut], steps[cut:]


def pixel_table(to_tensor_normalize, channels):
    """What the dataset's own ToTensor (+ Normalize) make of each byte value 0..255 in each channel,
    computed once on the CPU: channels x 256 floats. Looking a batch up in it on a GPU gives the
    very bits the CPU transform gives (dividing by 255 there would not: CUDA divides by a scalar
    by multiplying with its reciprocal, which differs in the last bit for 126 of the 256 values)."""
    from PIL import Image
    values = np.arange(256, dtype=np.uint8).reshape(1, 256)
    image = Image.fromarray(values) if channels == 1 else Image.fromarray(np.stack([values] * channels, -1))
    for step in to_tensor_normalize:
        image = step(image)
    return image[:, 0, :].contiguous()


def decode(dataset, per_image, cache_dirs, folder=None, write_cache=True):
    """(images as one uint8 tensor N x C x H x W after the per-image transform, labels). folder: an
    image folder's files (folder_files)."""
    if isinstance(dataset, dset.MNIST) and not per_image:  # already one uint8 tensor
        images = dataset.data.unsqueeze(1).contiguous()
        if images.shape[1:] != (1, 28, 28) or len(images) != len(dataset.targets):
            raise UserError(f"the MNIST files in {dataset.raw_folder} do not hold 28x28 digits; delete them "
                            f"and run again to download them afresh.")
        return images, torch.as_tensor(dataset.targets)
    if folder is None:  # e.g. FakeData: decode, no cache file
        images, labels, _ = decode_each(dataset, per_image)
        return images, labels
    # An image folder: decode once into a cache file, valid for exactly these files at these sizes.
    files, stats = folder
    name = cache_name(per_image, files, stats)
    for cache_dir in cache_dirs:
        path = os.path.join(cache_dir, name)
        if os.path.exists(path):
            try:
                started = time.monotonic()
                cache = torch.load(path, weights_only=True)
                print(f"Loaded {plural(len(cache['images']), 'decoded image')} from {path} in "
                      f"{time.monotonic() - started:.1f} s")
                report_bad(cache["bad"])
                return cache["images"], labels_without(dataset, files, cache["bad"])
            except Exception:
                print(f"notice: the image cache {path} is unreadable; decoding the images again.")
    started = time.monotonic()
    print(f"Decoding {plural(len(files), 'image')} once ({', '.join(map(repr, per_image)) or 'as they are'}) ...",
          flush=True)
    images, labels, bad = decode_each(dataset, per_image, files)
    print(f"Decoded them in {time.monotonic() - started:.1f} s")
    report_bad(bad)
    if write_cache and cache_dirs:  # (under torchrun: rank 0 only)
        write_image_cache({"images": images, "bad": bad}, name, cache_dirs)
    return images, labels


def write_image_cache(cache, name, folders):
    """Save the decoded images as `name` in the first of folders that can hold it (the dataset's
    folder, else the outdir), and remove the caches of older lists of images there. One that
    cannot be written anywhere is skipped with a notice: the run goes on, and decodes again next
    time."""
    started, why = time.monotonic(), {}
    for folder in folders:
        remove_temporaries(folder, ["image_cache_<key>.pt"])  # (of a decode that was killed: gigabytes)
        path = os.path.join(folder, name)
        try:
            os.makedirs(folder, exist_ok=True)  # (the outdir, before the run claims it)
            atomic_save(cache, path)
        except OSError as e:
            why[folder] = cannot_write(e)
            continue
        for old in glob.glob(os.path.join(folder, name.rsplit("_", 1)[0] + "_*.pt")):
            if os.path.basename(old) != name:
                with contextlib.suppress(OSError):  # (another command's, or removed by it first)
                    os.remove(old)  # a cache of an older list of images
        print(f"Cached them in {path} ({os.path.getsize(path) / 2**30:.2f} GiB, {time.monotonic() - started:.1f} s): "
              f"later starts load that instead of decoding again")
        return
    print(f"notice: the decoded images could not be cached ({'; '.join(f'{f}: {w}' for f, w in why.items())}); "
          f"the next start decodes them again.")


class PerImage(torch.utils.data.Dataset):
    """The dataset with only its per-image transform, each item as (uint8 tensor, label, True),
    or (empty tensor, -1, False) when the file cannot be read."""

    def __init__(self, dataset, per_image):
        self.dataset = copy.copy(dataset)
        self.dataset.transform = transforms.Compose(per_image + [transforms.PILToTensor()])

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            with own_rng():
                image, label = self.dataset[i]  # (PILToTensor: C x H x W, grayscale too)
            return image, label, True
        except Exception:  # PIL raises many kinds for damaged files
            return torch.zeros(0, dtype=torch.uint8), -1, False


@contextlib.contextmanager
def own_rng(seed=None):
    """Around reading one item of a dataset: the training's random generators are left as they
    were (torchvision's FakeData reseeds torch for each item, which would also reset the CUDA
    generator the training draws its noise from). With a seed, the item's random transforms draw
    from it, so that they come out the same whichever process reads the item, in whatever order."""
    in_worker = torch.utils.data.get_worker_info() is not None  # a worker's generators are its own
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with contextlib.ExitStack() as stack:
        if not in_worker:
            stack.enter_context(torch.random.fork_rng(devices=cuda))
        if seed is not None:
            if not in_worker:
                python, numpy = random.getstate(), np.random.get_state()
                stack.callback(random.setstate, python)
                stack.callback(np.random.set_state, numpy)
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
        yield


def decode_each(dataset, per_image, names=None):
    """Every image through the per-image transform: (uint8 N x C x H x W, labels, the names of the
    images that could not be read). This runs once, so it takes every core (shared by torchrun's
    processes on this machine), whatever --workers says. Each worker sends CHUNK images as one
    tensor: torch shares each tensor a worker sends through a file of its own, held open until it
    is freed, and a desktop allows 1,024 open files (CelebA has 202,599 images). The chunks are
    copied into one tensor as they come, and freed."""
    cores = max(usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)  # (torchrun: each decodes)
    workers = min(cores, len(dataset) // CHUNK)  # (a few hundred images: in this process, at once)
    loader = torch.utils.data.DataLoader(PerImage(dataset, per_image), batch_size=CHUNK, collate_fn=chunk,
                                         num_workers=workers, worker_init_fn=seed_worker,
                                         generator=torch.Generator())  # leaves the global RNG alone
    images, labels, bad, done = None, torch.empty(len(dataset), dtype=torch.int64), [], 0
    # (each chunk is copied, not kept: it holds an open file)
    for k, (some, their_labels, read) in enumerate(from_workers(loader)):
        if len(some):
            if images is None:  # (the size of the images, once the first is read)
                images = torch.empty((len(dataset), *some.shape[1:]), dtype=torch.uint8)
            images[done:done + len(some)] = some
            labels[done:done + len(some)] = their_labels
            done += len(some)
        bad += [names[i] if names else f"item {i}" for i in (k * CHUNK + torch.nonzero(~read).flatten()).tolist()]
    if images is None:
        raise UserError(f"none of the {len(dataset)} images in {getattr(dataset, 'root', 'the dataset')} "
                        f"could be read; check the files.")
    if done < len(dataset):  # (some could not be read: rare, so a copy is fine)
        images, labels = images[:done].clone(), labels[:done].clone()
    return images, labels, bad


def from_workers(loader, or_else=None):
    """Iterates over loader, whose worker processes read the images. Ctrl-C and SIGTERM are held
    while torch starts them (one handled while it forks them can land in an at-fork hook, which
    prints the exception and drops it: the command went on), and the workers never get them
    (deaf_children: a terminal's Ctrl-C reaches them too). An exception on the way (a worker's
    error, a Ctrl-C) stops them then: torch's frames in its traceback would keep them alive
    until the exit, where multiprocessing kills those still starting (spawn takes seconds) and
    torch reports that as a failure. Workers started without fork (spawn: macOS's and Windows'
    default; forkserver: Linux's from Python 3.14) get a pickled copy of the dataset, and one that
    cannot be pickled (a lambda in its transform, say) is one sentence (or_else: another way out)."""
    batches = None
    try:
        with signals_held(), deaf_children(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Got pickle error")  # (torch's own warning, before the error)
            try:
                batches = iter(loader)
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                if "pickle" not in str(e):
                    raise
                method = (loader.multiprocessing_context or torch.multiprocessing).get_start_method()
                raise UserError(f"the dataset cannot be handed to the {loader.num_workers} processes that read its "
                                f"images: Python starts them by {method!r}, which sends each a pickled copy "
                                f"({first_line(e)}); define the dataset's functions (its transform's, say) at the "
                                f"top of the script, not as a lambda or inside a function"
                                f"{', or ' + or_else if or_else else ''}.") from None
        yield from batches
    except BaseException as e:  # (GeneratorExit too: the loop that read them stopped)
        del batches
        raise e.with_traceback(None)


CHUNK = 256  # images a decoding worker sends at once (256 CelebA faces of 64x64: 3 MiB)


def chunk(items):
    """DataLoader's collate_fn for PerImage: (the images read, stacked; their labels; which were read)."""
    ok = torch.tensor([read for _, _, read in items])
    images = [image for image, _, read in items if read]
    return (torch.stack(images) if images else torch.zeros(0, dtype=torch.uint8),
            torch.tensor([label for _, label, read in items if read], dtype=torch.int64), ok)


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def folder_files(dataset):
    """An image folder's files (their names under its root) and their os.stat results; None for a
    dataset that is no image folder."""
    if not hasattr(dataset, "samples"):
        return None
    root = os.path.join(dataset.root, "")  # (ImageFolder joins root and the names: cut it off again)
    files = [path[len(root):] if path.startswith(root) else os.path.relpath(path, dataset.root)
             for path, _ in dataset.samples]
    return files, [os.stat(path) for path, _ in dataset.samples]


def cache_name(per_image, files, stats):
    """image_cache_<size>px_<key>.pt: the key covers the files, their sizes and times, and the
    per-image transform (for the tutorial's Resize(s) + CenterCrop(s): the size s, as before)."""
    size = per_image[0].size if per_image and isinstance(per_image[0], transforms.Resize) else None
    standard = (isinstance(size, int) and len(per_image) == 2 and
                tuple(per_image[1].size) == (size, size))  # Resize(s), CenterCrop(s)
    head = "v1\n%d\n" % size if standard else "v2\n%s\n" % "; ".join(map(repr, per_image))
    key = hashlib.sha256(os.fsencode(head + "\n".join(f"{f}\t{s.st_size}\t{s.st_mtime_ns}"
                                                     for f, s in zip(files, stats)))).hexdigest()[:16]
    return f"image_cache_{size if standard else 'custom'}px_{key}.pt"


def labels_without(dataset, files, bad):
    skip = set(bad)
    return torch.tensor([label for f, (_, label) in zip(files, dataset.samples) if f not in skip])


def data_id(dataset, images=None, folder=None):
    """What the run trained on, for the settings a resume must keep: the files (an image folder:
    folder, its folder_files), the digits' bytes (MNIST) or the decoded images."""
    if folder is not None:
        return "images-" + hashlib.sha256(os.fsencode(file_list(folder))).hexdigest()[:16]
    if isinstance(dataset, dset.MNIST):
        images = dataset.data.unsqueeze(1).contiguous() if images is None else images
        return "mnist-" + hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
    if images is None:
        images = decode_each(dataset, [])[0]
    return f"{type(dataset).__name__.lower()}-" + hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]


def file_list(folder):
    """An image folder's files (folder_files) and their sizes, a "name<tab>size" line each, which
    data_id hashes. Checkpoints keep it (compressed: DataLoader.files), so that a resume refused
    for changed data can say what changed. Names are hashed and kept as the bytes the OS gave
    (os.fsencode): a name that is not UTF-8 (Latin-1 from an old archive, say) reaches Python as a
    string with surrogate escapes, which str.encode() refuses; UTF-8 names give the same bytes."""
    files, stats = folder
    return "\n".join(f"{f}\t{s.st_size}" for f, s in zip(files, stats))


def what_changed(old, new):
    """How the training images differ from a run's, in words (old, new: DataLoader.files)."""
    if old is None or new is None:
        return "the training images differ from the run's (other digits, other --fake-data, or another folder)"
    def sizes(files):  # (os.fsencode's inverse on Linux and macOS, and on Windows for names from Linux)
        lines = zlib.decompress(files).decode("utf-8", "surrogateescape").splitlines()
        return dict(line.rsplit("\t", 1) for line in lines)
    before, now = sizes(old), sizes(new)
    changes = {"added": [f for f in now if f not in before], "removed": [f for f in before if f not in now],
               "changed in size": [f for f in now if f in before and now[f] != before[f]]}
    return "the image folder differs from the run's: " + ", ".join(
        f"{plural(len(names), 'image')} {how} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for how, names in changes.items() if names)


def on_device(images, device):
    """Keep the decoded dataset on the training device when it fits there (else in host memory,
    each batch gathered into page-locked memory: see rows)."""
    if device.type != "cpu":
        try:
            return images.to(device)
        except torch.cuda.OutOfMemoryError:
            print("notice: the dataset does not fit on the GPU; keeping it in host memory (each batch is copied "
                  "to the GPU while the one before it trains).")
    return images


def rows(images, index, pinned=False):
    """images[index]. pinned: gathered into page-locked memory (from PyTorch's caching host allocator,
    which keeps it until its copy is done), whose copy to the GPU runs beside the training; a plain
    tensor's copy would wait for it."""
    if not pinned:
        return images[index]
    batch = torch.empty((len(index), *images.shape[1:]), dtype=images.dtype, pin_memory=True)
    return torch.index_select(images, 0, index, out=batch)


def report_bad(bad):
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        print(f"warning: skipped {len(bad)} image(s) that could not be read: {shown}")


class Readable(torch.utils.data.Dataset):
    """The dataset as it is (for --stream), with a clear sentence for a file it cannot read; that
    stops --stream, while the decoded cache skips such files with a warning. seed: draw the random
    steps of image i in epoch e from (seed, e, i) (for transforms with random steps)."""

    def __init__(self, dataset, seed=None):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        seed = None if self.seed is None else ((self.seed * 1_000_003 + self.epoch) * 1_000_000_007 + i) % 2**63
        try:
            with own_rng(seed):
                return self.dataset[i]
        except Exception as e:  # PIL raises many kinds for damaged files
            path = self.dataset.samples[i][0] if hasattr(self.dataset, "samples") else f"item {i}"
            raise UserError(f"{path} cannot be read ({first_line(e) or type(e).__name__}); remove or replace it, "
                            f"or run without --stream, which skips unreadable images with a warning.") from None


# ---------------------------------------------------------------------------------------------
# Clear errors for a dataset that is missing or laid out wrongly
# ---------------------------------------------------------------------------------------------

def check_image_folder(root):
    """Refuse, in one sentence, the layouts that make ImageFolder fail or find nothing."""
    how = f"expected layout: {CELEBA_LAYOUT}; download img_align_celeba.zip from {CELEBA_URL} " \
          f"and unzip it into --dataroot"
    if not os.path.exists(root):
        raise UserError(f"--dataroot {root} does not exist ({how}).")
    if not os.path.isdir(root):
        raise UserError(f"--dataroot {root} is a file, not a folder ({how}).")
    entries = list(os.scandir(root))
    loose = [e for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    folders = [e for e in entries if e.is_dir()]
    if loose and not folders:
        raise UserError(f"--dataroot {root} holds {len(loose)} images directly, but ImageFolder needs "
                        f"them one folder down: move them into {os.path.join(root, 'img_align_celeba')}/ "
                        f"({how}).")
    if not any(f.lower().endswith(IMAGE_EXTENSIONS) for d in folders for _, _, fs in os.walk(d.path) for f in fs):
        raise UserError(f"--dataroot {root} holds no images ({how}).")


@contextlib.contextmanager
def mnist_errors(root):
    """Around the tutorial's MNIST(root, download=True, ...): a missing or damaged MNIST becomes
    one sentence that says where the files go."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise UserError(f"--dataroot {root} is a file; give the folder that holds MNIST/raw/.")
    raw = os.path.join(root, "MNIST", "raw")
    made = [d for d in (raw, os.path.dirname(raw), root) if not os.path.exists(d)]  # (torchvision makes them)
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # torchvision raises several kinds; only the files tell which case it is
        for folder in made:  # a failed first try leaves no empty folders behind
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        if not all(os.path.exists(os.path.join(raw, f)) for f in MNIST_FILES):
            raise UserError(
                f"MNIST is not in {root} and could not be downloaded ({first_line(e)}); put the four "
                f"files {', '.join(MNIST_FILES)} into {raw}/ (the official .gz archives, as downloaded, work "
                f"too: torchvision checks them against their published checksums), or run once with network "
                f"access.") from None
        raise UserError(f"an MNIST file in {raw} is corrupt or truncated ({first_line(e) or type(e).__name__}); "
                        f"delete that folder's files and run again to download them afresh.") from None
