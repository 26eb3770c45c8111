"""The on-disk feature cache: entries keyed by everything the features depend on.

An entry holds one channel's output of the frozen part of the network. Its name is a
digest of the channel's files, the classes, the preprocessing, the weights and the
precision, so that jobs over the same data (tuning trials) share it; parallel trials wait
on a file lock instead of computing an entry twice. The job's policy (what to read, what
to compute, where to keep it) is features.py's.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_artifact import torchscript
from trainer.data import Channel
from trainer.progress import progress
from trainer.sources import CachedFeatures, ImageFeatures, ShardedFeatures
from trainer.storage import atomic_write, digest

log = logging.getLogger(__name__)


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


def _compute(
    source: ImageFeatures | ShardedFeatures, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
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

    Entries are held on `storage` and hand out their batches on `device`.
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
        storage: torch.device,
        keep_backbone: bool,
    ) -> None:
        self.backbone_identity = backbone_identity
        self.features_identity = {**backbone_identity, **features_identity}
        self.directories = [*read_dirs, write_dir]
        self.write_dir = write_dir
        self.device = device
        self.storage = storage
        self.keep_backbone = keep_backbone
        # Entry names by channel name: a job's channels keep their files while it runs, and
        # each name costs a stat of every file of the channel.
        self._entry_names: dict[str, str] = {}

    def _find(self, name: str) -> Path | None:
        return next((d / name for d in self.directories if (d / name).is_file()), None)

    def _entry_name(self, channel: Channel) -> str:
        if channel.name not in self._entry_names:
            key = cache_key(channel, self.features_identity)
            self._entry_names[channel.name] = f"{channel.name}-{key}.pt"
        return self._entry_names[channel.name]

    def _backbone_name(self) -> str:
        return f"backbone-{digest(self.backbone_identity, 24)}.pt"

    def has(self, channel: Channel) -> bool:
        return self._find(self._entry_name(channel)) is not None

    def load(self, channel: Channel) -> CachedFeatures | None:
        path = self._find(self._entry_name(channel))
        return None if path is None else self._load(path)

    def compute_shared(
        self, source: ShardedFeatures, batch_size: int, save: bool = True
    ) -> CachedFeatures:
        """Compute a channel's features with every worker; the leader saves them."""
        features, labels = _compute(source, batch_size)
        if save and source.cluster.is_leader:
            path = self.write_dir / self._entry_name(source.dataset.channel)
            self.write_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda to: torch.save({"features": features, "labels": labels}, to))
            log.info(
                "feature cache: computed %d items of %s into %s",
                len(labels),
                source.dataset.channel.name,
                path,
            )
        return self._entry(features, labels)

    def compute(self, source: ImageFeatures, batch_size: int) -> CachedFeatures:
        """Compute and save the channel's features, unless another trial did while we waited."""
        channel = source.dataset.channel
        path = self.write_dir / self._entry_name(channel)
        self.write_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(path.with_name(f"{path.name}.lock")):
            if path.is_file():
                return self._load(path)
            features, labels = _compute(source, batch_size)
            atomic_write(path, lambda to: torch.save({"features": features, "labels": labels}, to))
        log.info("feature cache: computed %d items of %s into %s", len(labels), channel.name, path)
        return self._entry(features, labels)

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

    def _load(self, path: Path) -> CachedFeatures:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        log.info("feature cache: reusing %s", path)
        return self._entry(entry["features"], entry["labels"])

    def _entry(self, features: torch.Tensor, labels: torch.Tensor) -> CachedFeatures:
        return CachedFeatures(features, labels, self.device, self.storage)
