"""The feature cache: backbone features computed once per image and kept on disk.

With the backbone frozen, its output for an image never changes, so the textbook
loop spends almost all its time recomputing the same numbers every epoch (and a
tuning run repeats that in every trial). A cache entry is keyed by everything the
features depend on, so trials over the same data and preprocessing share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.data import UNREADABLE, Channel
from trainer.engine import Batch, ImageFeatures
from trainer.progress import progress
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is marked deprecated
            return torch.jit.load(str(path), map_location="cpu")

    def save_backbone(self, backbone: nn.Module, image_size: int) -> None:
        path = self.write_dir / self._backbone_name()
        if not self.keep_backbone or path.is_file():
            return
        self.write_dir.mkdir(parents=True, exist_ok=True)
        device = next(backbone.parameters()).device  # traced where it is; loaded onto the CPU
        example = torch.zeros(1, 3, image_size, image_size, device=device)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(backbone, example, check_trace=False)
            atomic_write(path, lambda to: torch.jit.save(traced, str(to)))


def _load(path: Path, device: torch.device) -> CachedFeatures:
    entry = torch.load(path, map_location="cpu", weights_only=True)
    log.info("feature cache: reusing %s", path)
    return CachedFeatures(entry["features"], entry["labels"], device)
