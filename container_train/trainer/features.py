"""The feature cache: backbone features computed once per image and kept on disk.

With the backbone frozen, its output for an image never changes, so the textbook
loop spends almost all its time recomputing the same numbers every epoch (and a
tuning run repeats that in every trial). A cache entry is keyed by everything the
features depend on, so trials over the same data and preprocessing share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from trainer.data import UNREADABLE, Channel
from trainer.engine import Batch, ImageFeatures
from trainer.progress import progress

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
    payload = json.dumps({"files": listing, "classes": channel.classes, **identity}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


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


def load_or_compute(
    source: ImageFeatures,
    identity: dict[str, Any],
    read_dirs: Sequence[Path],
    write_dir: Path,
    batch_size: int,
) -> CachedFeatures:
    """The channel's features from the first cache dir that has them, else computed and saved."""
    channel = source.dataset.channel
    name = f"{channel.name}-{cache_key(channel, identity)}.pt"
    device = source.runtime.device
    for directory in [*read_dirs, write_dir]:
        if (directory / name).is_file():
            return _load(directory / name, device)
    write_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(write_dir / f"{name}.lock"):
        if (write_dir / name).is_file():  # another trial computed it while we waited
            return _load(write_dir / name, device)
        features, labels = _compute(source, batch_size)
        partial = write_dir / f"{name}.{os.getpid()}.tmp"
        torch.save({"features": features, "labels": labels}, partial)
        partial.replace(write_dir / name)
        log.info(
            "feature cache: computed %d items of %s into %s",
            len(labels),
            channel.name,
            write_dir / name,
        )
    return CachedFeatures(features, labels, device)


def _load(path: Path, device: torch.device) -> CachedFeatures:
    entry = torch.load(path, map_location="cpu", weights_only=True)
    log.info("feature cache: reusing %s", path)
    return CachedFeatures(entry["features"], entry["labels"], device)
