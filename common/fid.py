"""FID for dcgan_celeba: the Frechet distance between the Inception features of generated and real
faces, through torch-fidelity (an optional dependency: pip install torch-fidelity), whose
InceptionV3 carries TensorFlow's weights and resizes as TensorFlow 1 did, so that its FID is the
reference value: 2048 features of each 64x64 image, upsampled to 299x299 (about 5.7 GFLOP each).

Inception's weights (a 95 MB file): --inception-weights PATH, else the file torch-fidelity
downloads at first use, in torch's hub cache (WEIGHTS below; downloaded there when the network
allows). Like the checkpoints, the file is loaded with weights_only=True: torch-fidelity itself
loads a given path with weights_only=False, which would run whatever a crafted file holds, so it
is handed a copy of what passed that load.

The real side: the first N images of epoch 0's order, as the training sees them (uint8 after
Resize and CenterCrop, as --export-real writes them). Their statistics are cached as
fid_stats_<key>.pt beside the dataset (or in --outdir), keyed by the image folder's files (as the
image cache is), N and the weights.

    faces = Faces(dataloader, cache_dirs, n, weights_path)      # (common.quality.judge makes it)
    faces.measure(netG, noise_shape, image_shape, n, seed)      # {"FID": ..., "n": ..., "n_real": ...}
"""
import hashlib
import os
import tempfile
import time

import torch

from .checkpoints import atomic_save
from .errors import UserError, first_line
from .pictures import to_uint8
from .sampling import samples

WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file, from its URL_INCEPTION_V3


class Faces:
    """The judge of generated faces: FID against the first n training images."""
    score = "FID"

    def __init__(self, dataloader, cache_dirs, n, weights=None):
        self.device = dataloader.device
        self.extractor, key = inception(weights, self.device)
        images, _ = dataloader.uint8_images()
        real = images[dataloader.order(0)[:n]]
        self.n_real = len(real)
        key = hashlib.sha256(f"{dataloader.id}\n{self.n_real}\n{key}".encode()).hexdigest()[:16]
        self.real = cached_statistics(f"fid_stats_{key}.pt", cache_dirs, lambda: self.statistics([real]))

    def statistics(self, batches):
        """torch-fidelity's mean and covariance of the Inception features of uint8 image batches
        (at most 100 images a forward: at 299x299 a batch of 500 would take gigabytes)."""
        from torch_fidelity.metric_fid import fid_features_to_statistics
        with torch.no_grad():
            features = torch.cat([self.extractor(part.to(self.device))[0].cpu()
                                  for batch in batches for part in batch.split(100)])
        return fid_features_to_statistics(features)

    def measure(self, netG, noise_shape, image_shape, n, seed):
        """FID of n samples of netG (common.sampling.samples), as PNG files would hold them (uint8)."""
        from torch_fidelity.metric_fid import fid_statistics_to_metric
        generated = self.statistics(to_uint8(images) for images in samples(netG, noise_shape, image_shape, n, seed))
        fid = fid_statistics_to_metric(generated, self.real, verbose=False)["frechet_inception_distance"]
        return {"FID": fid, "n": n, "n_real": self.n_real}

    @staticmethod
    def line(result):
        return f"FID {result['FID']:.3f}  ({result['n']} generated against {result['n_real']} real faces)"


def inception(weights, device):
    """(torch-fidelity's InceptionV3 feature extractor on device, a key of its weights). weights: a
    path, or None for torch-fidelity's own file in torch's hub cache (downloaded there if missing)."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
    except ImportError:
        raise UserError("FID needs torch-fidelity, which is not installed: pip install torch-fidelity") from None
    cache = os.path.join(torch.hub.get_dir(), "checkpoints", WEIGHTS)
    ways = f"give the file with --inception-weights PATH, or put it at {cache} (torch-fidelity's own place; it " \
           f"downloads {URL_INCEPTION_V3} there when it can)"
    path = weights or cache
    if weights is None and not os.path.exists(cache):
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            torch.hub.download_url_to_file(URL_INCEPTION_V3, cache, progress=False)
        except Exception as e:  # (no network, a proxy that refuses, a full disk ...)
            raise UserError(f"FID needs Inception's weights, which are not at {cache} and could not be downloaded "
                            f"({first_line(e)[:150] or type(e).__name__}): {ways}.") from None
    if not os.path.isfile(path):
        raise UserError(f"--inception-weights {path} is not a file: {ways}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a file of plain tensors ({first_line(e)[:150] or type(e).__name__}), so it "
                        f"is not loaded: {ways}.") from None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    key = digest.hexdigest()[:16]
    with tempfile.TemporaryDirectory() as tmp:  # (the copy torch-fidelity loads: what passed weights_only=True)
        torch.save(state, os.path.join(tmp, WEIGHTS))
        try:
            extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                    feature_extractor_weights_path=os.path.join(tmp, WEIGHTS))
        except RuntimeError as e:  # (load_state_dict: other keys or shapes)
            raise UserError(f"{path} does not hold InceptionV3's weights as torch-fidelity has them "
                            f"({first_line(e)[:150]}): {ways}.") from None
    return extractor.to(device), key


def cached_statistics(name, folders, compute):
    """The real images' statistics, loaded from the first of folders that holds `name`, else
    computed and saved into the first that can take them (a cache: a failure costs a notice)."""
    for folder in folders:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            try:
                return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}
            except Exception:
                print(f"notice: {path} is unreadable; computing the real images' FID statistics again.")
    started = time.monotonic()
    statistics = compute()
    print(f"Computed the real images' FID statistics in {time.monotonic() - started:.0f} s")
    for folder in folders:
        try:
            atomic_save({k: torch.from_numpy(v) for k, v in statistics.items()}, os.path.join(folder, name))
            break
        except OSError:
            continue
    return statistics
