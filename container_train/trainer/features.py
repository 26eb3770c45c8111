"""Where the head's input features come from, and the cache that keeps them.

With the backbone frozen, its output for an image never changes, so the textbook
loop spends almost all its time recomputing the same numbers every epoch (and a
tuning run repeats that in every trial). A cache entry is keyed by everything the
features depend on, so trials over the same data and preprocessing share it.
`prepare_features` is the job's policy: what is read from the cache, what is
computed, and where it is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_artifact import torchscript
from model_artifact.preprocessing import Preprocessing, eval_transform
from trainer.contract import FEATURE_CACHE_CHANNEL, TrainingPaths
from trainer.data import UNREADABLE, Channel, ImageDataset
from trainer.engine import Batch, FeatureSource, ImageFeatures
from trainer.hyperparameters import Hyperparameters
from trainer.model import BACKBONE, backbone_weights, build_backbone
from trainer.progress import progress
from trainer.runtime import Runtime
from trainer.storage import atomic_write, digest

log = logging.getLogger(__name__)


class CachedFeatures:
    """Features and labels of a whole channel, held on the training device."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
        self.features = features.to(device)
        self.labels = labels.to(device)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def unreadable(self) -> int:
        return int((self.labels == UNREADABLE).sum())

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[Batch]:
        index = torch.as_tensor(order, device=self.labels.device)
        for chunk in index.split(batch_size):
            yield self.features[chunk], self.labels[chunk]


def cache_key(channel: Channel, identity: dict[str, Any]) -> str:
    """A digest of the channel's files (relative path and size) and what computes the features.

    Sizes, not modification times: SageMaker downloads a channel afresh for every job.
    """
    listing = [
        (str(path.relative_to(channel.root)), path.stat().st_size, label)
        for path, label in channel.samples
    ]
    return digest({"files": listing, "classes": channel.classes, **identity}, 24)


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Parallel trials wait for the first one to compute an entry instead of repeating it."""
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compute(source: ImageFeatures, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = list(range(len(source)))
    total = (len(order) + batch_size - 1) // batch_size
    features, labels = [], []
    for batch_features, batch_labels in progress(
        source.batches(order, batch_size), total, f"features {source.dataset.channel.name}"
    ):
        features.append(batch_features.cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(features), torch.cat(labels)


class FeatureCache:
    """One job's view of the cache: entries are read from the first of `read_dirs` (then
    `write_dir`) that has them, and new ones are written to `write_dir`.

    `backbone_identity` names the backbone's weights; `features_identity` adds everything
    else the features depend on (preprocessing, precision). With `keep_backbone`, the
    backbone is kept beside the features as TorchScript, so that a later trial that finds
    every channel cached needs neither torchvision nor the weights file.
    """

    def __init__(
        self,
        backbone_identity: dict[str, Any],
        features_identity: dict[str, Any],
        read_dirs: Sequence[Path],
        write_dir: Path,
        device: torch.device,
        keep_backbone: bool,
    ) -> None:
        self.backbone_identity = backbone_identity
        self.features_identity = {**backbone_identity, **features_identity}
        self.directories = [*read_dirs, write_dir]
        self.write_dir = write_dir
        self.device = device
        self.keep_backbone = keep_backbone

    def _find(self, name: str) -> Path | None:
        return next((d / name for d in self.directories if (d / name).is_file()), None)

    def _entry_name(self, channel: Channel) -> str:
        return f"{channel.name}-{cache_key(channel, self.features_identity)}.pt"

    def _backbone_name(self) -> str:
        return f"backbone-{digest(self.backbone_identity, 24)}.pt"

    def load(self, channel: Channel) -> CachedFeatures | None:
        path = self._find(self._entry_name(channel))
        return None if path is None else _load(path, self.device)

    def compute(self, source: ImageFeatures, batch_size: int) -> CachedFeatures:
        """Compute and save the channel's features, unless another trial did while we waited."""
        channel = source.dataset.channel
        path = self.write_dir / self._entry_name(channel)
        self.write_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(path.with_name(f"{path.name}.lock")):
            if path.is_file():
                return _load(path, self.device)
            features, labels = _compute(source, batch_size)
            atomic_write(path, lambda to: torch.save({"features": features, "labels": labels}, to))
        log.info("feature cache: computed %d items of %s into %s", len(labels), channel.name, path)
        return CachedFeatures(features, labels, self.device)

    def load_backbone(self) -> nn.Module | None:
        path = self._find(self._backbone_name())
        if path is None:
            return None
        log.info("feature cache: reusing the backbone %s", path)
        return torchscript.load(path)

    def save_backbone(self, backbone: nn.Module, image_size: int) -> None:
        path = self.write_dir / self._backbone_name()
        if not self.keep_backbone or path.is_file():
            return
        self.write_dir.mkdir(parents=True, exist_ok=True)
        device = next(backbone.parameters()).device  # traced where it is; loaded onto the CPU
        example = torch.zeros(1, 3, image_size, image_size, device=device)
        traced = torchscript.trace(backbone, example)
        atomic_write(path, lambda to: torchscript.save(traced, to))


def _load(path: Path, device: torch.device) -> CachedFeatures:
    entry = torch.load(path, map_location="cpu", weights_only=True)
    log.info("feature cache: reusing %s", path)
    return CachedFeatures(entry["features"], entry["labels"], device)


def prepare_features(
    channels: dict[str, Channel],
    preprocessing: Preprocessing,
    runtime: Runtime,
    hp: Hyperparameters,
    paths: TrainingPaths,
) -> tuple[nn.Module, dict[str, FeatureSource]]:
    """The frozen backbone, and per channel where the head's input features come from.

    Cache on (the default): a cached channel is never decoded, and when every channel and
    the backbone are cached (any tuning trial after the first) the job reads no image and
    builds no backbone. Cache off: the backbone runs on every image in every epoch.
    """
    if hp.feature_cache == "off":
        log.info("feature cache off: the backbone runs on every image in every epoch")
        backbone = new_backbone(hp, runtime)
        return backbone, dict(image_sources(channels, backbone, preprocessing, runtime, hp))
    cache = job_cache(preprocessing, runtime, hp, paths)
    cached = {name: cache.load(channel) for name, channel in channels.items()}
    missing = {name: channels[name] for name, source in cached.items() if source is None}
    loaded = None if missing else cache.load_backbone()
    backbone = loaded if loaded is not None else new_backbone(hp, runtime)
    cache.save_backbone(backbone, hp.image_size)
    sources: dict[str, FeatureSource] = {
        name: source for name, source in cached.items() if source is not None
    }
    for name, source in image_sources(missing, backbone, preprocessing, runtime, hp).items():
        sources[name] = cache.compute(source, hp.batch_size)
    return backbone, sources


def new_backbone(hp: Hyperparameters, runtime: Runtime) -> nn.Module:
    torch.manual_seed(hp.seed)  # random-init backbones (pretrained=false) are keyed by the seed
    backbone = build_backbone(hp.pretrained)
    return backbone.to(runtime.device).to(memory_format=torch.channels_last)


def image_sources(
    channels: dict[str, Channel],
    backbone: nn.Module,
    preprocessing: Preprocessing,
    runtime: Runtime,
    hp: Hyperparameters,
) -> dict[str, ImageFeatures]:
    """Decoded images through the backbone, per channel (none: torchvision is not imported)."""
    if not channels:
        return {}
    transform = eval_transform(preprocessing)
    return {
        name: ImageFeatures(
            ImageDataset(channel, transform, hp.image_size), backbone, runtime, hp.num_workers
        )
        for name, channel in channels.items()
    }


def job_cache(
    preprocessing: Preprocessing, runtime: Runtime, hp: Hyperparameters, paths: TrainingPaths
) -> FeatureCache:
    """Read from the feature_cache channel when there is one, and write there when it is
    writable (local tuning shares one folder between trials); else write to output data."""
    shared = paths.channel(FEATURE_CACHE_CHANNEL)
    writable = shared.is_dir() and os.access(shared, os.W_OK)
    return FeatureCache(
        backbone_identity={
            "backbone": f"{BACKBONE}-batchnorm-folded",
            "weights": backbone_weights(hp.pretrained, hp.seed),
            "torch": torch.__version__,
        },
        features_identity={
            "preprocessing": preprocessing.to_dict(),
            "precision": str(runtime.amp_dtype),
        },
        read_dirs=[shared] if shared.is_dir() else [],
        write_dir=shared if writable else paths.output_data_dir / FEATURE_CACHE_CHANNEL,
        device=runtime.device,
        # Only a shared folder keeps the backbone: in output data it would add ~100 MB to
        # every job's output archive.
        keep_backbone=writable,
    )
