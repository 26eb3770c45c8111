"""The training and evaluation loops over backbone features.

The backbone is frozen, so the head only ever sees 2048-wide feature vectors.
Where they come from is a `FeatureSource`: computed from the images on every pass
(`ImageFeatures`, the textbook loop) or computed once and kept (`CachedFeatures`,
see features.py). Both hand out the same batches for the same order, so the head
trains identically either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from trainer.data import UNREADABLE, ImageDataset, image_loader
from trainer.errors import ClientError
from trainer.runtime import Runtime

Batch = tuple[torch.Tensor, torch.Tensor]  # (features, labels), on the training device


class FeatureSource(Protocol):
    def __len__(self) -> int: ...

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[Batch]: ...

    @property
    def unreadable(self) -> int:
        """Items whose file could not be decoded (complete after one full pass)."""
        ...


class ImageFeatures:
    """Decodes the images and runs the backbone on every pass."""

    def __init__(
        self, dataset: ImageDataset, backbone: nn.Module, runtime: Runtime, num_workers: int
    ) -> None:
        self.dataset = dataset
        self.backbone = backbone
        self.runtime = runtime
        self.num_workers = num_workers
        self.unreadable_seen: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def unreadable(self) -> int:
        return len(self.unreadable_seen)

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[Batch]:
        loader = image_loader(
            self.dataset, batch_size, self.num_workers, self.runtime.pin_memory, order
        )
        position = 0
        for images, labels in loader:
            indices = order[position : position + len(labels)]
            position += len(labels)
            self.unreadable_seen.update(
                index for index, label in zip(indices, labels.tolist(), strict=True) if label < 0
            )
            yield (
                backbone_features(self.backbone, images, self.runtime),
                labels.to(self.runtime.device, non_blocking=True),
            )


# no_grad, not inference_mode: the head saves these features for its backward pass.
@torch.no_grad()
def backbone_features(backbone: nn.Module, images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    images = images.to(runtime.device, non_blocking=True, memory_format=torch.channels_last)
    with runtime.autocast():
        features = backbone(images)
    return features.float()


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of one epoch: a function of (seed, epoch) only, so a resumed
    job and a cached-feature job see exactly the batches an uninterrupted textbook job sees."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(size, generator=generator).tolist()


@dataclass
class Result:
    loss: float
    accuracy: float
    count: int


class Meter:
    """Sums of loss and correct predictions over the readable items of a pass."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.correct = 0
        self.count = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        count = len(labels)
        self.loss_sum += float(loss) * count
        self.correct += int((logits.argmax(1) == labels).sum())
        self.count += count

    def result(self) -> Result:
        if self.count == 0:
            return Result(float("nan"), float("nan"), 0)
        return Result(self.loss_sum / self.count, self.correct / self.count, self.count)


def _readable(features: torch.Tensor, labels: torch.Tensor) -> Batch:
    keep = labels != UNREADABLE
    return features[keep], labels[keep]


def train_one_epoch(
    head: nn.Module,
    batches: Iterator[Batch],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    epoch: int,
) -> Result:
    head.train()
    meter = Meter()
    for step, (all_features, all_labels) in enumerate(batches):
        features, labels = _readable(all_features, all_labels)
        if len(labels) == 0:
            continue
        logits = head(features)
        loss = criterion(logits, labels)
        if not torch.isfinite(loss):
            raise ClientError(
                f"training loss became {loss.item()} at epoch {epoch}, step {step}; "
                f"lower lr or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        meter.update(loss.detach(), logits.detach(), labels)
    return meter.result()


@torch.inference_mode()
def evaluate(head: nn.Module, batches: Iterator[Batch], criterion: nn.Module) -> Result:
    head.eval()
    meter = Meter()
    for all_features, all_labels in batches:
        features, labels = _readable(all_features, all_labels)
        if len(labels):
            logits = head(features)
            meter.update(criterion(logits, labels), logits, labels)
    return meter.result()
