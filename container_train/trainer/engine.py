"""The training and evaluation loops over backbone features.

The backbone is frozen, so the head only ever sees 2048-wide feature vectors.
Where they come from is a `FeatureSource`: computed from the images on every pass
(`ImageFeatures`, the textbook loop) or computed once and kept (`CachedFeatures`,
see features.py). Both hand out the same batches for the same order, so the head
trains identically either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import nn

from trainer.cluster import Cluster
from trainer.data import UNREADABLE, ImageDataset, image_loader
from trainer.errors import ClientError
from trainer.runtime import Runtime

Batch = tuple[torch.Tensor, torch.Tensor]  # (features, labels), on the training device


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
        return self.batches_of(batch_groups(order, batch_size))

    def batches_of(self, groups: Sequence[Sequence[int]]) -> Iterator[Batch]:
        loader = image_loader(self.dataset, groups, self.num_workers, self.runtime.pin_memory)
        for group, (images, labels) in zip(groups, loader, strict=True):
            self.unreadable_seen.update(
                index for index, label in zip(group, labels.tolist(), strict=True) if label < 0
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


@dataclass(frozen=True)
class Predictions:
    """The readable items of an evaluation pass: their positions in the channel, true labels
    and logits (on the CPU), for the end-of-job evaluation and the macro F1 metric."""

    indices: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor

    @classmethod
    def of_batches(
        cls, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> Predictions:
        if not batches:
            return cls(
                torch.zeros(0, dtype=torch.int64),
                torch.zeros(0, dtype=torch.int64),
                torch.zeros(0, 0),
            )
        indices, labels, logits = (torch.cat(parts).cpu() for parts in zip(*batches, strict=True))
        return cls(indices, labels, logits.float())

    def predicted(self) -> torch.Tensor:
        """The top-1 class of each item."""
        return self.logits.argmax(1) if len(self.labels) else self.labels


@dataclass
class Result:
    loss: float
    accuracy: float
    count: int
    predictions: Predictions | None = None  # kept by the evaluation passes


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
    """Loss and accuracy of a pass over a whole channel in order, and its predictions."""
    head.eval()
    meter = Meter()
    kept, position = [], 0
    for all_features, all_labels in batches:
        features, labels = _readable(all_features, all_labels)
        if len(labels):
            logits = head(features)
            meter.update(criterion(logits, labels), logits, labels)
            indices = torch.nonzero(all_labels != UNREADABLE)[:, 0] + position
            kept.append((indices, labels, logits))
        position += len(all_labels)
    return replace(meter.result(), predictions=Predictions.of_batches(kept))


# ------------------------------------------------------- training the last backbone stages


def shares(groups: list[list[int]], cluster: Cluster) -> tuple[list[list[int]], list[bool]]:
    """This worker's part of each global batch (every N-th item), and which parts are
    fillers: a worker with no item in a small last batch still runs the step (DDP needs
    every worker in every step) on the batch's first item, weighted zero."""
    parts, fillers = [], []
    for group in groups:
        part = group[cluster.rank :: cluster.world_size]
        parts.append(part or group[:1])
        fillers.append(not part)
    return parts, fillers


class Sums:
    """Loss, correct predictions and readable items of one worker's share of a pass."""

    def __init__(self) -> None:
        self.values = [0.0, 0.0, 0.0]

    def add(self, loss_sum: float, logits: torch.Tensor, labels: torch.Tensor) -> None:
        readable = labels != UNREADABLE
        correct = int(((logits.argmax(1) == labels) & readable).sum())
        self.values = [
            self.values[0] + loss_sum,
            self.values[1] + correct,
            self.values[2] + int(readable.sum()),
        ]

    def result(self, cluster: Cluster) -> Result:
        loss_sum, correct, count = cluster.sum(self.values)
        if count == 0:
            return Result(float("nan"), float("nan"), 0)
        return Result(loss_sum / count, correct / count, int(count))


def train_stages_epoch(
    model: nn.Module,
    source: FeatureSource,
    groups: list[list[int]],
    optimizer: torch.optim.Optimizer,
    cluster: Cluster,
    runtime: Runtime,
    epoch: int,
) -> Result:
    """One epoch of the trainable stages and head (DDP-wrapped when there are workers).

    Each worker's loss is its share's summed loss over the global batch's readable count,
    times the number of workers: DDP averages the gradients, so every step takes the
    gradient of the global batch's mean loss, as a one-process job does.
    """
    model.train()
    criterion = nn.CrossEntropyLoss(reduction="sum", ignore_index=UNREADABLE)
    sums = Sums()
    parts, fillers = shares(groups, cluster)
    for step, ((inputs, all_labels), filler) in enumerate(
        zip(source.batches_of(parts), fillers, strict=True)
    ):
        labels = torch.full_like(all_labels, UNREADABLE) if filler else all_labels
        labels = labels.to(runtime.device, non_blocking=True)
        with runtime.training_autocast():
            logits = model(inputs.to(runtime.device, non_blocking=True))
        loss_sum = criterion(logits.float(), labels)
        count, total = cluster.sum([float((labels != UNREADABLE).sum()), float(loss_sum.detach())])
        if count and not math.isfinite(total):
            raise ClientError(
                f"training loss became {total / count} at epoch {epoch}, step {step}; "
                f"lower lr or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        # Every worker runs backward in every step, so DDP's gradient reduction completes.
        (loss_sum * (cluster.world_size / max(count, 1.0))).backward()
        if count:
            optimizer.step()
        sums.add(float(loss_sum.detach()), logits.detach(), labels)
    return sums.result(cluster)


@torch.inference_mode()
def evaluate_stages(
    model: nn.Module, source: FeatureSource, batch_size: int, cluster: Cluster, runtime: Runtime
) -> Result:
    """Each worker evaluates every N-th item; the sums are combined."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum", ignore_index=UNREADABLE)
    sums = Sums()
    mine = list(range(len(source)))[cluster.rank :: cluster.world_size]
    kept = []
    groups = batch_groups(mine, batch_size)
    for group, (inputs, batch_labels) in zip(groups, source.batches_of(groups), strict=True):
        labels = batch_labels.to(runtime.device)
        with runtime.training_autocast():
            logits = model(inputs.to(runtime.device, non_blocking=True)).float()
        sums.add(float(criterion(logits, labels)), logits, labels)
        readable = labels != UNREADABLE
        kept.append((torch.as_tensor(group)[readable.cpu()], labels[readable], logits[readable]))
    predictions = shared_predictions(Predictions.of_batches(kept), len(source), cluster)
    return replace(sums.result(cluster), predictions=predictions)


def shared_predictions(mine: Predictions, size: int, cluster: Cluster) -> Predictions:
    """Every worker's predictions of a pass, on every worker, in channel order.

    One all-reduce of a (size, 2 + classes) table: each worker fills its own items' rows
    (a flag, the label, the logits), the sum holds every item once.
    """
    if not cluster.distributed:
        return mine
    # A worker without items has no logits to tell the width: the others' mean tells it.
    width, workers = cluster.sum([float(mine.logits.shape[1]), float(mine.logits.shape[1] > 0)])
    classes = round(width / workers)
    table = torch.zeros(size, 2 + classes, dtype=torch.float64)
    table[mine.indices, 0] = 1.0
    table[mine.indices, 1] = mine.labels.double()
    table[mine.indices, 2:] = mine.logits.double()
    summed = torch.tensor(cluster.sum(table.flatten().tolist())).view(size, 2 + classes)
    present = summed[:, 0] > 0
    return Predictions(
        torch.nonzero(present)[:, 0], summed[present, 1].long(), summed[present, 2:].float()
    )
