"""Where the trained layers' input comes from: a `FeatureSource` per channel.

The frozen part of the network (the whole backbone when only the head trains, the stages
before the trained ones otherwise) is a fixed function, so its output for an image never
changes. A source hands out that output in batches:
- `ImageFeatures` decodes the images and runs the frozen part on every pass (the textbook
  loop);
- `CachedFeatures` holds a whole channel's output, computed once (see feature_cache.py);
- `ShardedFeatures` is an `ImageFeatures` whose batches the workers compute in turn and
  share, so that several workers compute a channel once, batch for batch as one would.
All three hand out the same batches for the same order, so what trains on them learns the
same thing whichever it gets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch import nn

from trainer.cluster import Cluster
from trainer.data import ImageDataset, image_loader
from trainer.runtime import Runtime

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, labels), on the training device


def batch_groups(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """The global batches of a pass over `order`: the batches a one-process job trains on."""
    return [list(order[start : start + batch_size]) for start in range(0, len(order), batch_size)]


class FeatureSource(Protocol):
    def __len__(self) -> int: ...

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[Batch]:
        """The batches of `batch_groups(order, batch_size)`, as `batches_of` hands them out."""
        ...

    def batches_of(self, groups: Sequence[Sequence[int]]) -> Iterator[Batch]:
        """One batch per group of (non-empty) indices, in the given order."""
        ...


# no_grad, not inference_mode: the trained layers save these features for their backward.
@torch.no_grad()
def backbone_features(frozen: nn.Module, images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    images = images.to(runtime.device, non_blocking=True, memory_format=torch.channels_last)
    with runtime.autocast():
        features = frozen(images)
    return features.float()


class ImageFeatures:
    """Decodes the images and runs the frozen part on every pass."""

    def __init__(
        self, dataset: ImageDataset, backbone: nn.Module, runtime: Runtime, num_workers: int
    ) -> None:
        self.dataset = dataset
        self.backbone = backbone
        self.runtime = runtime
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[Batch]:
        return self.batches_of(batch_groups(order, batch_size))

    def batches_of(self, groups: Sequence[Sequence[int]]) -> Iterator[Batch]:
        loader = image_loader(self.dataset, groups, self.num_workers, self.runtime.pin_memory)
        for images, labels in loader:
            yield (
                backbone_features(self.backbone, images, self.runtime),
                labels.to(self.runtime.device, non_blocking=True),
            )


class CachedFeatures:
    """Features and labels of a whole channel, held on `storage` (default: `device`) and
    handed out on `device`: the pooled features of the head fit on the training device, a
    trained stage's input (49 times larger) stays in host memory."""

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        device: torch.device,
        storage: torch.device | None = None,
    ) -> None:
        self.features = features.to(storage or device)
        self.labels = labels.to(storage or device)
        self.device = device

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[Batch]:
        index = torch.as_tensor(order, device=self.labels.device)
        for chunk in index.split(batch_size):
            yield self._on_device(chunk)

    def batches_of(self, groups: Sequence[Sequence[int]]) -> Iterator[Batch]:
        for group in groups:
            yield self._on_device(torch.as_tensor(group, device=self.labels.device))

    def _on_device(self, index: torch.Tensor) -> Batch:
        features, labels = self.features[index], self.labels[index]
        return (
            features.to(self.device, non_blocking=True),
            labels.to(self.device, non_blocking=True),
        )


class ShardedFeatures:
    """An ImageFeatures whose batches are computed by the workers in turn and shared.

    Batch k of a pass is computed by worker k mod N, from the same images a one-process
    job puts in batch k, and every worker receives every batch in order (on the CPU).
    """

    def __init__(self, source: ImageFeatures, cluster: Cluster, image_size: int) -> None:
        self.source = source
        self.cluster = cluster
        # One item's features, so that a worker without a batch in a round can take part.
        probe = torch.zeros(1, 3, image_size, image_size)
        self.template = backbone_features(source.backbone, probe, source.runtime)[0].cpu()

    @property
    def dataset(self) -> ImageDataset:
        return self.source.dataset

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[Batch]:
        return self.batches_of(batch_groups(order, batch_size))

    def batches_of(self, groups: Sequence[Sequence[int]]) -> Iterator[Batch]:
        rank, world = self.cluster.rank, self.cluster.world_size
        own = self.source.batches_of(groups[rank::world])
        rows = max(len(group) for group in groups)
        for first in range(0, len(groups), world):
            batch = next(own) if first + rank < len(groups) else None
            yield from self.cluster.gather_batches(batch, rows, self.template)
