"""The training job: channels in, servable model out.

`train` (see trainer/cli.py) runs `main` through the training toolkit. A ClientError
raised anywhere below becomes a one-line reason in <base>/output/failure and a
non-zero exit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from model_artifact.config import ModelConfig
from model_artifact.preprocessing import Preprocessing
from model_artifact.torchscript import export_model
from trainer.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from trainer.contract import (
    OPTIONAL_CHANNELS,
    REQUIRED_CHANNELS,
    TrainingPaths,
    read_hyperparameters,
    training_paths,
)
from trainer.data import Channel, check_unreadable, scan_channel
from trainer.debugger import Debugger, create_debugger
from trainer.engine import FeatureSource, Result, epoch_order, evaluate, train_one_epoch
from trainer.features import prepare_features
from trainer.history import write_history
from trainer.hyperparameters import Hyperparameters, parse_hyperparameters, trajectory_settings
from trainer.metrics import format_metrics
from trainer.model import ImageClassifier, architecture, build_head
from trainer.profiling import profiled
from trainer.progress import progress
from trainer.runtime import select_runtime

log = logging.getLogger(__name__)


def main() -> None:
    logging.getLogger("trainer").setLevel(logging.INFO)
    run(training_paths())


def run(paths: TrainingPaths) -> None:
    hp = parse_hyperparameters(read_hyperparameters(paths))
    log.info("hyperparameters: %s", hp.to_dict())
    channels = load_channels(paths)
    classes = channels["train"].classes
    runtime = select_runtime(hp.amp)
    log.info("runtime: %s", runtime.describe())

    preprocessing = Preprocessing.for_image_size(hp.image_size)
    backbone, sources = prepare_features(channels, preprocessing, runtime, hp, paths)
    # Seeded on its own, so the head starts from the same weights whether the backbone
    # was built here or loaded from the cache.
    torch.manual_seed(hp.seed)
    head = build_head(len(classes), hp.hidden_units, hp.dropout)
    model = ImageClassifier(backbone, head).to(runtime.device)
    optimizer = torch.optim.AdamW(
        model.head.parameters(), lr=hp.lr, eps=hp.eps, weight_decay=hp.weight_decay
    )

    training = Training(hp, model, optimizer, sources, channels, paths, create_debugger(paths))
    training.fit()
    test = training.test()

    config = ModelConfig(
        classes=classes,
        preprocessing=preprocessing,
        architecture=architecture(hp.pretrained, hp.hidden_units, hp.dropout, len(classes)),
        hyperparameters=hp.to_dict(),
        metrics=training.final_metrics(test),
    )
    written = export_model(paths.model_dir, model, config)
    write_history(paths.output_data_dir, training.history)
    log.info(
        "model from epoch %d saved to %s (export check: max abs diff %.2e)",
        config.metrics["epoch"],
        paths.model_dir,
        written.export_check_max_abs_diff,
    )


def load_channels(paths: TrainingPaths) -> dict[str, Channel]:
    """The image channels; classes come from train, the others may not add any."""
    train = scan_channel("train", paths.channel("train"))
    channels = {"train": train}
    for name in REQUIRED_CHANNELS[1:]:
        channels[name] = scan_channel(name, paths.channel(name), train.classes)
    for name in OPTIONAL_CHANNELS:
        if paths.channel(name).is_dir():
            channels[name] = scan_channel(name, paths.channel(name), train.classes)
    log.info(
        "classes %s; %s",
        list(train.classes),
        ", ".join(f"{name}: {len(channel)} files" for name, channel in channels.items()),
    )
    return channels


@dataclass
class BestEpoch:
    """The epoch of the lowest valid loss so far, and its head's weights."""

    epoch: int
    valid_loss: float
    head: dict[str, torch.Tensor]


@dataclass
class Training:
    """The epoch loop with early stopping, checkpoints and Debugger modes."""

    hp: Hyperparameters
    model: ImageClassifier
    optimizer: torch.optim.Optimizer
    sources: dict[str, FeatureSource]
    channels: dict[str, Channel]
    paths: TrainingPaths
    debugger: Debugger
    criterion: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    history: list[dict[str, float]] = field(default_factory=list)
    best: BestEpoch | None = None
    stale_epochs: int = 0

    @property
    def fingerprint(self) -> str:
        """Identifies the run a checkpoint belongs to: what changes the learned head."""
        return fingerprint(
            {
                **trajectory_settings(self.hp),
                "data": {name: len(channel) for name, channel in self.channels.items()},
                "classes": list(self.channels["train"].classes),
            }
        )

    def fit(self) -> None:
        self.debugger.register(self.model.head, self.criterion)
        start = self.resume() + 1
        for epoch in range(start, self.hp.epochs + 1):
            started = time.monotonic()
            train = self.train_epoch(epoch, profile=epoch == start)
            self.debugger.eval_mode()
            valid = self.evaluate("valid")
            if epoch == start:
                self.check_unreadable("train", "valid")
            metrics = {**_named("train", train), **_named("valid", valid)}
            print(format_metrics(metrics, epoch=epoch))
            seconds = round(time.monotonic() - started, 3)
            self.history.append({"epoch": epoch, **metrics, "seconds": seconds})
            stop = self.track_best(epoch, valid)
            self.save(epoch)
            if stop:
                log.info(
                    "early stopping: valid loss has not improved for %d epochs", self.hp.patience
                )
                break
        self.debugger.close()
        assert self.best is not None  # at least one epoch ran, now or before the checkpoint
        self.model.head.load_state_dict(self.best.head)

    def train_epoch(self, epoch: int, profile: bool) -> Result:
        # Dropout draws from the global RNG: seeding it per epoch makes a resumed job, and a
        # job reading cached features, draw exactly what an uninterrupted one draws.
        torch.manual_seed(self.hp.seed + epoch)
        self.debugger.train_mode()
        source = self.sources["train"]
        order = epoch_order(len(source), self.hp.seed, epoch)
        batches = progress(
            source.batches(order, self.hp.batch_size), self._steps(source), f"epoch {epoch}"
        )
        if profile:
            batches = profiled(
                batches, self.hp.profile_steps, self.paths.output_data_dir / "profile"
            )
        return train_one_epoch(self.model.head, batches, self.optimizer, self.criterion, epoch)

    def evaluate(self, name: str) -> Result:
        source = self.sources[name]
        batches = source.batches(range(len(source)), self.hp.batch_size)
        return evaluate(
            self.model.head, progress(batches, self._steps(source), name), self.criterion
        )

    def _steps(self, source: FeatureSource) -> int:
        return (len(source) + self.hp.batch_size - 1) // self.hp.batch_size

    def check_unreadable(self, *names: str) -> None:
        for name in names:
            check_unreadable(self.channels[name], self.sources[name].unreadable)

    def track_best(self, epoch: int, valid: Result) -> bool:
        """Keep the head of the lowest valid loss; True when patience has run out."""
        if self.best is None or valid.loss < self.best.valid_loss:
            head = {k: v.detach().cpu().clone() for k, v in self.model.head.state_dict().items()}
            self.best = BestEpoch(epoch, valid.loss, head)
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        return 0 < self.hp.patience <= self.stale_epochs

    def save(self, epoch: int) -> None:
        assert self.best is not None
        save_checkpoint(
            self.paths.checkpoint_dir,
            {
                "fingerprint": self.fingerprint,
                "epoch": epoch,
                "head": self.model.head.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "history": self.history,
                "best": vars(self.best),
                "stale_epochs": self.stale_epochs,
                "rng": torch.get_rng_state(),
            },
        )

    def resume(self) -> int:
        """The last completed epoch of a checkpoint of this run, or 0."""
        state = load_checkpoint(self.paths.checkpoint_dir, self.fingerprint)
        if state is None:
            return 0
        self.model.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = state["history"]
        self.best = BestEpoch(**state["best"])
        self.stale_epochs = state["stale_epochs"]
        torch.set_rng_state(state["rng"])
        if 0 < self.hp.patience <= self.stale_epochs:
            return self.hp.epochs  # it had already stopped early
        return int(state["epoch"])

    def test(self) -> Result | None:
        if "test" not in self.sources:
            return None
        result = self.evaluate("test")
        self.check_unreadable("test")
        print(format_metrics(_named("test", result)))
        return result

    def final_metrics(self, test: Result | None) -> dict[str, float]:
        """The best epoch's metrics (the exported head is that epoch's), and test's."""
        assert self.best is not None
        best_epoch = self.best.epoch
        row = next(row for row in self.history if row["epoch"] == best_epoch)
        metrics = {key: value for key, value in row.items() if key != "seconds"}
        return {**metrics, **(_named("test", test) if test else {})}


def _named(split: str, result: Result) -> dict[str, float]:
    return {f"{split}_loss": result.loss, f"{split}_accuracy": result.accuracy}
