"""The epoch loop around engine.py's passes: early stopping, the best epoch, checkpoints,
Debugger modes, metric lines and TensorBoard scalars.

One `Training` for every mode: what trains (the head, or the trained stages and the head),
who trains it together (`cluster`: the leader alone for the head, every worker for
stages) and in which precision (`autocast`) are values it is given.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from trainer.cluster import SINGLE, Cluster
from trainer.context import JobContext
from trainer.data import check_unreadable
from trainer.debugger import Debugger
from trainer.engine import (
    NO_AUTOCAST,
    Autocast,
    Result,
    epoch_order,
    evaluate,
    evaluation_batches,
    share_batches,
    train_one_epoch,
)
from trainer.hyperparameters import trajectory_settings
from trainer.metrics import format_metrics
from trainer.profiling import profiled
from trainer.progress import progress
from trainer.scalars import Scalars
from trainer.sources import FeatureSource

log = logging.getLogger(__name__)


@dataclass
class BestEpoch:
    """The epoch of the lowest valid loss so far, and the trained weights of that epoch."""

    epoch: int
    valid_loss: float
    weights: dict[str, torch.Tensor]


@dataclass
class Training:
    """The epoch loop of `trained` (what the optimizer trains) on `sources`.

    Every worker of `cluster` runs the loop on its share of each global batch
    (DistributedDataParallel exchanges the gradients when there are several) and on
    combined results, so they all take the same decisions; the leader alone prints,
    checkpoints and writes.
    """

    context: JobContext
    trained: nn.Module
    optimizer: torch.optim.Optimizer
    sources: dict[str, FeatureSource]
    debugger: Debugger
    cluster: Cluster = SINGLE
    autocast: Autocast = NO_AUTOCAST
    criterion: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    history: list[dict[str, float]] = field(default_factory=list)
    best: BestEpoch | None = None
    stale_epochs: int = 0
    scalars: Scalars | None = None  # the leader's TensorBoard event file

    def __post_init__(self) -> None:
        self.network: nn.Module = self.trained
        if self.cluster.distributed:
            device = self.cluster.device
            # BatchNorm stays in eval mode (frozen statistics): no buffer changes to broadcast.
            self.network = DistributedDataParallel(
                self.trained,
                device_ids=[device] if device.type == "cuda" else None,
                broadcast_buffers=False,
            )

    @property
    def fingerprint(self) -> str:
        """Identifies the run a checkpoint belongs to: what changes the learned weights."""
        channels = self.context.channels
        return fingerprint(
            {
                **trajectory_settings(self.context.hp),
                "data": {name: len(channel) for name, channel in channels.items()},
                "classes": list(self.context.classes),
            }
        )

    def fit(self) -> None:
        hp = self.context.hp
        self.debugger.register(self.trained, self.criterion)
        if self.cluster.is_leader:
            self.scalars = Scalars(self.context.paths.tensorboard_dir)
        start = self.resume() + 1
        for epoch in range(start, hp.epochs + 1):
            started = time.monotonic()
            train = self.train_epoch(epoch, profile=epoch == start)
            self.debugger.eval_mode()
            valid = self.evaluate("valid")
            if epoch == start:
                self.check_unreadable({"train": train, "valid": valid})
            metrics = {**_named("train", train), **_named("valid", valid)}
            seconds = round(time.monotonic() - started, 3)
            self.history.append({"epoch": epoch, **metrics, "seconds": seconds})
            stop = self.cluster.broadcast(self.track_best(epoch, valid))
            if self.cluster.is_leader:
                print(format_metrics(metrics, epoch=epoch))
                assert self.scalars is not None
                self.scalars.add(epoch, {**_tagged(metrics), **self.learning_rates()})
                self.save(epoch)
            if stop:
                log.info("early stopping: valid loss has not improved for %d epochs", hp.patience)
                break
        self.debugger.close()
        assert self.best is not None  # at least one epoch ran, now or before the checkpoint
        self.trained.load_state_dict(self.best.weights)

    def learning_rates(self) -> dict[str, float]:
        names = ("lr/head", "lr/backbone")
        return {
            name: group["lr"]
            for name, group in zip(names, self.optimizer.param_groups, strict=False)
        }

    def train_epoch(self, epoch: int, profile: bool) -> Result:
        hp = self.context.hp
        # Dropout draws from the global RNG: seeding it per epoch makes a resumed job, and a
        # job reading cached features, draw exactly what an uninterrupted one draws.
        torch.manual_seed(hp.seed + epoch)
        self.debugger.train_mode()
        source = self.sources["train"]
        order = epoch_order(len(source), hp.seed, epoch)
        batches = progress(
            share_batches(source, order, hp.batch_size, self.cluster),
            _steps(len(source), hp.batch_size),
            f"epoch {epoch}",
        )
        if profile and self.cluster.is_leader:
            trace_dir = self.context.paths.output_data_dir / "profile"
            batches = profiled(batches, hp.profile_steps, trace_dir)
        return train_one_epoch(
            self.network,
            batches,
            self.optimizer,
            self.criterion,
            epoch,
            self.cluster,
            self.autocast,
        )

    def evaluate(self, name: str, keep_predictions: bool = False) -> Result:
        source, batch_size = self.sources[name], self.context.hp.batch_size
        batches = evaluation_batches(source, batch_size, self.cluster)
        share = -(-len(source) // self.cluster.world_size)
        return evaluate(
            self.trained,
            progress(batches, _steps(share, batch_size), name),
            self.criterion,
            self.cluster,
            self.autocast,
            keep_predictions,
        )

    def check_unreadable(self, passes: dict[str, Result]) -> None:
        # Each pass covers every item of its channel once: what it did not count was unreadable.
        for name, result in passes.items():
            channel = self.context.channels[name]
            check_unreadable(channel, len(channel) - result.count)

    def track_best(self, epoch: int, valid: Result) -> bool:
        """Keep the weights of the lowest valid loss; True when patience has run out."""
        if self.best is None or valid.loss < self.best.valid_loss:
            weights = {k: v.detach().cpu().clone() for k, v in self.trained.state_dict().items()}
            self.best = BestEpoch(epoch, valid.loss, weights)
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        return 0 < self.context.hp.patience <= self.stale_epochs

    def save(self, epoch: int) -> None:
        assert self.best is not None
        save_checkpoint(
            self.context.paths.checkpoint_dir,
            {
                "fingerprint": self.fingerprint,
                "epoch": epoch,
                "weights": self.trained.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "history": self.history,
                "best": vars(self.best),
                "stale_epochs": self.stale_epochs,
                "rng": torch.get_rng_state(),
            },
        )

    def resume(self) -> int:
        """The last completed epoch of a checkpoint of this run, or 0 (the leader's
        checkpoint, on every worker)."""
        hp = self.context.hp
        found = (
            load_checkpoint(self.context.paths.checkpoint_dir, self.fingerprint)
            if self.cluster.is_leader
            else None
        )
        state = self.cluster.broadcast(found)
        if state is None:
            return 0
        self.trained.load_state_dict(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = state["history"]
        self.best = BestEpoch(**state["best"])
        self.stale_epochs = state["stale_epochs"]
        torch.set_rng_state(state["rng"])
        if 0 < hp.patience <= self.stale_epochs:
            return hp.epochs  # it had already stopped early
        return int(state["epoch"])

    def test(self) -> Result | None:
        """The best epoch's weights on the test channel, with every item's prediction."""
        if "test" not in self.sources:
            return None
        result = self.evaluate("test", keep_predictions=True)
        self.check_unreadable({"test": result})
        if self.scalars is not None:
            print(format_metrics(_named("test", result)))
            assert self.best is not None
            self.scalars.add(self.best.epoch, _tagged(_named("test", result)))
        return result

    def final_metrics(self, test: Result | None) -> dict[str, float]:
        """The best epoch's metrics (the exported weights are that epoch's), and test's."""
        assert self.best is not None
        best_epoch = self.best.epoch
        row = next(row for row in self.history if row["epoch"] == best_epoch)
        metrics = {key: value for key, value in row.items() if key != "seconds"}
        return {**metrics, **(_named("test", test) if test else {})}


def _steps(items: int, batch_size: int) -> int:
    return -(-items // batch_size)


def _tagged(metrics: dict[str, float]) -> dict[str, float]:
    """`train_loss` -> `train/loss`: TensorBoard groups scalars by the part before '/'."""
    return {key.replace("_", "/", 1): value for key, value in metrics.items()}


def _named(split: str, result: Result) -> dict[str, float]:
    return {f"{split}_loss": result.loss, f"{split}_accuracy": result.accuracy}
