"""Which worker of the job this process is, and the few collectives the job needs.

A job runs as one process per device on every host (see launcher.py); a single-device job
runs as one process with `SINGLE`, for which every collective is the identity and no
process group exists. Rank 0, the leader, is the only one that writes the model, metrics,
curves, checkpoints and the feature cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Cluster:
    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    host: str = "algo-1"
    # Where collective tensors live: the worker's GPU for NCCL, the CPU for gloo.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast(self, value: T) -> T:
        """The leader's `value`, on every worker."""
        if not self.distributed:
            return value
        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]  # type: ignore[no-any-return]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over all workers (float64, so counts stay exact)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()  # type: ignore[no-any-return]

    def all_agree(self, flags: Sequence[bool]) -> list[bool]:
        """Element-wise: true where every worker says true."""
        if not self.distributed:
            return list(flags)
        tensor = torch.tensor(flags, dtype=torch.int32, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return [bool(flag) for flag in tensor.tolist()]

    def gather_batches(self, batch: Batch | None, rows: int, template: torch.Tensor) -> list[Batch]:
        """Every worker's batch of this round, in rank order, on every worker (CPU).

        A worker without a batch this round (the last round of a channel) sends none.
        `template` gives the shape of one item's features and their dtype; batches are
        padded to `rows` for the collective and cut back to their size.
        """
        features = torch.zeros((rows, *template.shape), dtype=template.dtype, device=self.device)
        labels = torch.zeros(rows, dtype=torch.int64, device=self.device)
        count = 0
        if batch is not None:
            count = len(batch[1])
            features[:count] = batch[0].to(self.device, template.dtype)
            labels[:count] = batch[1].to(self.device)
        counts = self._all_gather(torch.tensor([count], device=self.device))
        all_features = self._all_gather(features)
        all_labels = self._all_gather(labels)
        return [
            (f[: int(n)].cpu(), y[: int(n)].cpu())
            for f, y, n in zip(all_features, all_labels, counts, strict=True)
            if int(n)
        ]

    def _all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor)
        return gathered


SINGLE = Cluster()
