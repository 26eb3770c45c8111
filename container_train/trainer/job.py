"""The training job: channels in, servable model out.

`train` (the sagemaker-training command the image runs) calls `main` through
SAGEMAKER_TRAINING_MODULE=trainer.job:main. A ClientError raised anywhere below
becomes a one-line reason in <base>/output/failure and a non-zero exit.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainer import artifacts
from trainer.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from trainer.contract import OPTIONAL_CHANNELS, TrainingPaths, read_hyperparameters, training_paths
from trainer.data import Channel, ImageDataset, check_unreadable, scan_channel
from trainer.debugger import Debugger, create_debugger
from trainer.engine import (
    FeatureSource,
    ImageFeatures,
    Result,
    epoch_order,
    evaluate,
    train_one_epoch,
)
from trainer.features import FeatureCache
from trainer.hyperparameters import Hyperparameters, parse_hyperparameters
from trainer.metrics import format_metrics
from trainer.model import (
    BACKBONE,
    PRETRAINED_WEIGHTS,
    ImageClassifier,
    build_backbone,
    build_head,
)
from trainer.preprocessing import Preprocessing, eval_transform
from trainer.profiling import profiled
from trainer.progress import progress
from trainer.runtime import Runtime, select_runtime

log = logging.getLogger(__name__)

FEATURE_CACHE_CHANNEL = "feature_cache"


def main() -> None:
    logging.getLogger("trainer").setLevel(logging.INFO)
    paths = training_paths()
    # The toolkit writes <base>/output/failure without creating the folder; when that write
    # fails, the job exits 0 as if it had succeeded. SageMaker creates it; a bare run may not.
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    run(paths)


def run(paths: TrainingPaths) -> None:
    hp = parse_hyperparameters(read_hyperparameters(paths))
    log.info("hyperparameters: %s", hp.to_dict())
    channels = load_channels(paths)
    runtime = select_runtime(hp.amp)
    log.info("runtime: %s", runtime.describe())

    preprocessing = Preprocessing.for_image_size(hp.image_size)
    backbone, sources = backbone_and_features(channels, preprocessing, runtime, hp, paths)
    classes = channels["train"].classes
    # Seeded on its own, so the head starts from the same weights whether the backbone
    # was built here or loaded from the cache.
    torch.manual_seed(hp.seed)
    model = ImageClassifier(backbone, build_head(len(classes), hp.hidden_units, hp.dropout))
    model.to(runtime.device)

    training = Training(hp, model, paths, sources, channels, create_debugger(paths))
    training.fit()
    test = training.test()
    export(paths, hp, model, training, classes, preprocessing, test)


def load_channels(paths: TrainingPaths) -> dict[str, Channel]:
    train = scan_channel("train", paths.channel("train"))
    channels = {
        "train": train,
        "valid": scan_channel("valid", paths.channel("valid"), train.classes),
    }
    for name in OPTIONAL_CHANNELS:
        if paths.channel(name).is_dir():
            channels[name] = scan_channel(name, paths.channel(name), train.classes)
    log.info(
        "classes %s; %s",
        list(train.classes),
        ", ".join(f"{name}: {len(channel)} files" for name, channel in channels.items()),
    )
    return channels


def backbone_and_features(
    channels: dict[str, Channel],
    preprocessing: Preprocessing,
    runtime: Runtime,
    hp: Hyperparameters,
    paths: TrainingPaths,
) -> tuple[nn.Module, dict[str, FeatureSource]]:
    """The frozen backbone, and per channel where the head's input features come from.

    Cache on (the default): a cached channel is never decoded, and when every channel and
    the backbone are cached (any tuning trial after the first) the job reads no image and
    builds no backbone. Cache off: the backbone runs on every image in every epoch.
    """
    if hp.feature_cache == "off":
        log.info("feature cache off: the backbone runs on every image in every epoch")
        textbook = new_backbone(hp, runtime)
        return textbook, dict(image_sources(channels, textbook, preprocessing, runtime, hp))
    cache = feature_cache(preprocessing, runtime, hp, paths)
    cached = {name: cache.load(channel) for name, channel in channels.items()}
    missing = [name for name, source in cached.items() if source is None]
    backbone: nn.Module | None = None if missing else cache.load_backbone()
    if backbone is None:
        backbone = new_backbone(hp, runtime)
        cache.save_backbone(backbone, hp.image_size)
    sources: dict[str, FeatureSource] = {
        name: source for name, source in cached.items() if source is not None
    }
    uncached = {name: channels[name] for name in missing}
    for name, source in image_sources(uncached, backbone, preprocessing, runtime, hp).items():
        sources[name] = cache.compute(source, hp.batch_size)
    return backbone, sources


def new_backbone(hp: Hyperparameters, runtime: Runtime) -> nn.Module:
    torch.manual_seed(hp.seed)  # random-init backbones (pretrained=false) are keyed by the seed
    backbone = build_backbone(hp.pretrained)
    return backbone.to(runtime.device).to(memory_format=torch.channels_last)


def image_sources(
    channels: dict[str, Channel],
    backbone: nn.Module,
    preprocessing: Preprocessing,
    runtime: Runtime,
    hp: Hyperparameters,
) -> dict[str, ImageFeatures]:
    """Decoded images through the backbone, per channel (none: torchvision is not imported)."""
    if not channels:
        return {}
    transform = eval_transform(preprocessing)
    return {
        name: ImageFeatures(
            ImageDataset(channel, transform, hp.image_size),
            backbone,
            runtime,
            hp.num_workers,
        )
        for name, channel in channels.items()
    }


def feature_cache(
    preprocessing: Preprocessing, runtime: Runtime, hp: Hyperparameters, paths: TrainingPaths
) -> FeatureCache:
    """Read from the feature_cache channel when there is one, and write there when it is
    writable (local tuning shares one folder between trials); else write to output data."""
    shared = paths.channel(FEATURE_CACHE_CHANNEL)
    writable = shared.is_dir() and os.access(shared, os.W_OK)
    return FeatureCache(
        backbone_identity={
            "backbone": f"{BACKBONE}-batchnorm-folded",
            "weights": PRETRAINED_WEIGHTS if hp.pretrained else f"random-init-seed-{hp.seed}",
            "torch": torch.__version__,
        },
        features_identity={
            "preprocessing": preprocessing.to_dict(),
            "precision": str(runtime.amp_dtype),
        },
        read_dirs=[shared] if shared.is_dir() else [],
        write_dir=shared if writable else paths.output_data_dir / "feature_cache",
        device=runtime.device,
        # Only a shared folder keeps the backbone: in output data it would add ~100 MB to
        # every job's output archive.
        keep_backbone=writable,
    )


@dataclass
class Training:
    """The epoch loop with early stopping, checkpoints and Debugger modes."""

    hp: Hyperparameters
    model: ImageClassifier
    paths: TrainingPaths
    sources: dict[str, FeatureSource]
    channels: dict[str, Channel]
    debugger: Debugger
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    stale_epochs: int = 0

    def __post_init__(self) -> None:
        hp = self.hp
        self.optimizer = torch.optim.AdamW(
            self.model.head.parameters(), lr=hp.lr, eps=hp.eps, weight_decay=hp.weight_decay
        )
        self.criterion = nn.CrossEntropyLoss()
        self.debugger.register(self.model.head, self.criterion)
        trajectory = {
            key: value
            for key, value in hp.to_dict().items()
            if key not in ("epochs", "patience", "num_workers", "profile_steps", "feature_cache")
        }
        trajectory["data"] = {name: len(channel) for name, channel in self.channels.items()}
        trajectory["classes"] = list(self.channels["train"].classes)
        self.fingerprint = fingerprint(trajectory)

    def fit(self) -> None:
        start = self.resume() + 1
        for epoch in range(start, self.hp.epochs + 1):
            started = time.monotonic()
            train = self.train_epoch(epoch, profile=epoch == start)
            self.debugger.eval_mode()
            valid = self.evaluate("valid")
            if epoch == start:
                self.check_unreadable("train", "valid")
            row = {"epoch": epoch, **_named("train", train), **_named("valid", valid)}
            print(format_metrics({k: v for k, v in row.items() if k != "epoch"}, epoch=epoch))
            self.history.append({**row, "seconds": round(time.monotonic() - started, 3)})
            stop = self.track_best(epoch, valid)
            self.save(epoch)
            if stop:
                log.info(
                    "early stopping: valid loss has not improved for %d epochs", self.hp.patience
                )
                break
        self.debugger.close()
        self.model.head.load_state_dict(self.best["head"])

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
        if not self.best or valid.loss < self.best["valid_loss"]:
            head = {k: v.detach().cpu().clone() for k, v in self.model.head.state_dict().items()}
            self.best = {"epoch": epoch, "valid_loss": valid.loss, "head": head}
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        return 0 < self.hp.patience <= self.stale_epochs

    def save(self, epoch: int) -> None:
        save_checkpoint(
            self.paths.checkpoint_dir,
            {
                "fingerprint": self.fingerprint,
                "epoch": epoch,
                "head": self.model.head.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "history": self.history,
                "best": self.best,
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
        self.best = state["best"]
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
        best_row = next(row for row in self.history if row["epoch"] == self.best["epoch"])
        metrics = {key: value for key, value in best_row.items() if key != "seconds"}
        return {**metrics, **(_named("test", test) if test else {})}


def _named(split: str, result: Result) -> dict[str, float]:
    return {f"{split}_loss": result.loss, f"{split}_accuracy": result.accuracy}


def export(
    paths: TrainingPaths,
    hp: Hyperparameters,
    model: ImageClassifier,
    training: Training,
    classes: tuple[str, ...],
    preprocessing: Preprocessing,
    test: Result | None,
) -> None:
    metrics = training.final_metrics(test)
    export_error = artifacts.export_model(model, paths.model_dir, hp.image_size)
    artifacts.write_model_config(
        paths.model_dir,
        {
            "classes": list(classes),
            "preprocessing": preprocessing.to_dict(),
            "input": {"dtype": "float32", "shape": ["batch", 3, hp.image_size, hp.image_size]},
            "output": "logits",
            "architecture": {
                "backbone": BACKBONE,
                "weights": PRETRAINED_WEIGHTS if hp.pretrained else None,
                "frozen": "all convolutional layers",
                "head": [2048, hp.hidden_units, len(classes)],
                "dropout": hp.dropout,
            },
            "hyperparameters": hp.to_dict(),
            "metrics": metrics,
            "export_check_max_abs_diff": export_error,
            "versions": artifacts.library_versions(),
        },
    )
    artifacts.write_history(paths.output_data_dir, training.history)
    log.info(
        "model from epoch %d saved to %s (export check: max abs diff %.2e)",
        training.best["epoch"],
        paths.model_dir,
        export_error,
    )
