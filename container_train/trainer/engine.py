"""The training and evaluation passes: one loop, one evaluation, one meter for every mode.

What trains is a module (the head, or the trained stages and the head), fed by a
`FeatureSource` (sources.py). What differs between modes is passed in, not copied:
- `model`: which parameters train (DistributedDataParallel-wrapped when gradients are
  exchanged);
- `batches`: where the input comes from, and which share of each global batch is this
  worker's (`share_batches`);
- `cluster`: who shares each global batch (`SINGLE` when one process trains: then every
  collective is the identity);
- `autocast`: the precision of the trained layers (the head trains in fp32; stages in
  bf16 where the hardware has it natively).

Determinism: the sample order of an epoch is a function of (seed, epoch) only (the job
seeds dropout per epoch too), so cached and textbook runs, resumed and uninterrupted
runs, and one worker or several take the same steps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from trainer.cluster import SINGLE, Cluster
from trainer.data import UNREADABLE
from trainer.errors import ClientError
from trainer.sources import Batch, FeatureSource, batch_groups

Autocast = Callable[[], AbstractContextManager[object]]
NO_AUTOCAST: Autocast = contextlib.nullcontext  # fp32


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of one epoch: a function of (seed, epoch) only, so a resumed
    job and a cached-feature job see exactly the batches an uninterrupted textbook job sees."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(size, generator=generator).tolist()


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


def share_batches(
    source: FeatureSource, order: Sequence[int], batch_size: int, cluster: Cluster = SINGLE
) -> Iterator[Batch]:
    """This worker's share of each global batch of `order`; a filler's items are marked
    unreadable, so that they count nowhere."""
    if not cluster.distributed:
        yield from source.batches(order, batch_size)  # the whole batches, on the fast path
        return
    parts, fillers = shares(batch_groups(order, batch_size), cluster)
    for (inputs, labels), filler in zip(source.batches_of(parts), fillers, strict=True):
        yield inputs, torch.full_like(labels, UNREADABLE) if filler else labels


def evaluation_batches(
    source: FeatureSource, batch_size: int, cluster: Cluster = SINGLE
) -> Iterator[Batch]:
    """Every item once, in channel order; each worker takes every N-th item."""
    return source.batches(range(len(source))[cluster.rank :: cluster.world_size], batch_size)


@dataclass
class Predictions:
    """Per-item outputs of an evaluation pass, in channel order (every item of the channel:
    an unreadable one keeps its place, with label UNREADABLE)."""

    logits: torch.Tensor  # (items, classes), float32, CPU
    labels: torch.Tensor  # (items,), int64, CPU

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.softmax(dim=1)


@dataclass
class Result:
    loss: float
    accuracy: float
    count: int  # readable items of the pass, over every worker
    predictions: Predictions | None = None  # when the evaluation was asked for them


class Meter:
    """Sums of loss, correct predictions and readable items of this worker's share of a
    pass; `result` combines every worker's."""

    def __init__(self) -> None:
        self.values = [0.0, 0.0, 0.0]

    def add(self, loss_sum: float, logits: torch.Tensor, labels: torch.Tensor, count: int) -> None:
        """A batch's summed loss over its `count` readable items, and its predictions."""
        correct = int(((logits.argmax(1) == labels) & (labels != UNREADABLE)).sum())
        self.values = [self.values[0] + loss_sum, self.values[1] + correct, self.values[2] + count]

    def result(self, cluster: Cluster = SINGLE) -> Result:
        loss_sum, correct, count = cluster.sum(self.values)
        if count == 0:
            return Result(float("nan"), float("nan"), 0)
        return Result(loss_sum / count, correct / count, int(count))


def train_one_epoch(
    model: nn.Module,
    batches: Iterator[Batch],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    epoch: int,
    cluster: Cluster = SINGLE,
    autocast: Autocast = NO_AUTOCAST,
) -> Result:
    """One epoch of `model` on `batches` (this worker's share of each global batch).

    `criterion` averages over the readable items of the share. Scaled by the share's part
    of the global batch's readable items, times the number of workers (DDP averages
    gradients), every step takes the gradient of the global batch's mean loss, as one
    process does; alone, the scale is exactly 1.
    """
    model.train()
    meter = Meter()
    for step, (inputs, labels) in enumerate(batches):
        with autocast():
            logits = model(inputs).float()
        loss, mine = _loss(criterion, logits, labels)
        loss_sum = float(loss.detach()) * mine
        count, total = cluster.sum([float(mine), loss_sum])
        if count and not math.isfinite(total):
            raise ClientError(
                f"training loss became {total / count} at epoch {epoch}, step {step}; "
                f"lower lr or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        # Every worker runs backward in every step, so DDP's gradient reduction completes.
        scale = mine * cluster.world_size / max(count, 1.0)
        (loss if scale == 1.0 else loss * scale).backward()
        if count:
            optimizer.step()
        meter.add(loss_sum, logits.detach(), labels, mine)
    return meter.result(cluster)


def _loss(
    criterion: nn.Module, logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """The criterion over the readable items, and their number (a zero that keeps the graph
    when there is none: the step still runs on every worker)."""
    readable = labels != UNREADABLE
    mine = int(readable.sum())
    if mine == len(labels):
        return criterion(logits, labels), mine
    if mine == 0:
        return logits.sum() * 0.0, 0
    return criterion(logits[readable], labels[readable]), mine


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterator[Batch],
    criterion: nn.Module,
    cluster: Cluster = SINGLE,
    autocast: Autocast = NO_AUTOCAST,
    keep_predictions: bool = False,
) -> Result:
    """Loss and accuracy of `model` over `batches` (this worker's share of a channel, see
    `evaluation_batches`), combined over every worker; with `keep_predictions`, also
    every item's logits and label in channel order, on every worker."""
    model.eval()
    meter = Meter()
    kept: list[Batch] = []
    for inputs, labels in batches:
        with autocast():
            logits = model(inputs).float()
        loss, mine = _loss(criterion, logits, labels)
        meter.add(float(loss) * mine, logits, labels, mine)
        if keep_predictions:
            kept.append((logits.cpu(), labels.cpu()))
    result = meter.result(cluster)
    if keep_predictions:
        result.predictions = _in_channel_order(kept, cluster)
    return result


def _in_channel_order(kept: list[Batch], cluster: Cluster) -> Predictions:
    """Every worker's predictions, interleaved back into channel order (worker r held
    items r, r + N, r + 2N, ...)."""
    mine = (torch.cat([b[0] for b in kept]), torch.cat([b[1] for b in kept])) if kept else None
    if not cluster.distributed:
        assert mine is not None, "a channel has at least one item"
        return Predictions(*mine)
    # The leader holds the most items (items 0, N, 2N, ...): their number, one item's shape.
    shape: tuple[int, torch.Tensor] | None = (len(mine[1]), mine[0][0]) if mine else None
    leaders = cluster.broadcast(shape)
    assert leaders is not None, "the leader holds item 0"
    rows, template = leaders
    gathered = cluster.gather_batches(mine, rows, template)
    items = sum(len(labels) for _, labels in gathered)
    logits = torch.empty(items, *template.shape, dtype=template.dtype)
    labels = torch.empty(items, dtype=torch.int64)
    for rank, (worker_logits, worker_labels) in enumerate(gathered):
        logits[rank :: cluster.world_size] = worker_logits
        labels[rank :: cluster.world_size] = worker_labels
    return Predictions(logits, labels)
