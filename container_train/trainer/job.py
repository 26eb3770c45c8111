"""The training job: channels in, servable model out.

`train` (see trainer/cli.py) runs `main` through the training toolkit. A ClientError
raised anywhere below becomes a one-line reason in <base>/output/failure and a
non-zero exit.

A job with one worker (one device on one host) runs `run` in this process. With more
(several GPUs, or several hosts), `main` starts one worker per device through torch's
launcher (launcher.py) and each runs `run` with its place in the cluster:
- `train_layers=head` (default): the workers share the feature extraction, then the
  leader trains the head alone. The head is a 2048 -> 256 -> classes MLP on features
  held in memory: an epoch of 10,000 images is a few milliseconds of compute, less than
  one DDP gradient exchange per step would cost, so more workers would only add
  synchronisation (docs/benchmarks.md has the measurement).
- `train_layers=layer4|layer3|all`: the last stages train too, each step costs a
  backbone forward and backward pass, and every worker trains on its share of each
  global batch under DistributedDataParallel.
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
from trainer.cluster import SINGLE, Cluster
from trainer.contract import (
    OPTIONAL_CHANNELS,
    REQUIRED_CHANNELS,
    TrainingPaths,
    read_hyperparameters,
    training_paths,
)
from trainer.data import Channel, check_unreadable, scan_channel
from trainer.debugger import Debugger, create_debugger
from trainer.engine import (
    FeatureSource,
    Result,
    batch_groups,
    epoch_order,
    evaluate,
    evaluate_stages,
    train_one_epoch,
    train_stages_epoch,
)
from trainer.features import prepare_features, prepare_stage_features
from trainer.history import write_history
from trainer.hyperparameters import Hyperparameters, parse_hyperparameters, trajectory_settings
from trainer.launcher import launch, plan_workers
from trainer.metrics import format_metrics
from trainer.model import ImageClassifier, architecture, build_head, build_stages
from trainer.profiling import profiled
from trainer.progress import progress
from trainer.runtime import Runtime, select_runtime
from trainer.scalars import Scalars

log = logging.getLogger(__name__)


def main() -> None:
    logging.getLogger("trainer").setLevel(logging.INFO)
    paths = training_paths()
    hp = parse_hyperparameters(read_hyperparameters(paths))
    plan = plan_workers(paths, hp)
    if plan.world_size == 1:
        run(paths, hp)  # no launcher, no process group: the job as it always ran
    else:
        launch(plan, hp)


def run(paths: TrainingPaths, hp: Hyperparameters, cluster: Cluster = SINGLE) -> None:
    """The job with `hp` (the job's parsed hyperparameters), as `cluster`'s worker."""
    if cluster.is_leader:
        log.info("hyperparameters: %s", hp.to_dict())
    channels = load_channels(paths, cluster)
    gpu = cluster.device if cluster.device.type == "cuda" else None
    runtime = select_runtime(hp.amp, gpu)
    if cluster.is_leader:
        log.info("runtime: %s", runtime.describe())
    preprocessing = Preprocessing.for_image_size(hp.image_size)
    if hp.train_layers == "head":
        train_head(hp, channels, preprocessing, runtime, paths, cluster)
    else:
        fine_tune(hp, channels, preprocessing, runtime, paths, cluster)


def train_head(
    hp: Hyperparameters,
    channels: dict[str, Channel],
    preprocessing: Preprocessing,
    runtime: Runtime,
    paths: TrainingPaths,
    cluster: Cluster,
) -> None:
    """The frozen backbone's features once per image, then the head on the leader."""
    prepared = prepare_features(channels, preprocessing, runtime, hp, paths, cluster)
    if prepared is None:
        return  # a worker that helped compute the features: the leader trains the head
    backbone, sources = prepared
    # Seeded on its own, so the head starts from the same weights whether the backbone
    # was built here or loaded from the cache.
    torch.manual_seed(hp.seed)
    head = build_head(len(channels["train"].classes), hp.hidden_units, hp.dropout)
    model = ImageClassifier(backbone, head).to(runtime.device)
    optimizer = torch.optim.AdamW(
        model.head.parameters(), lr=hp.lr, eps=hp.eps, weight_decay=hp.weight_decay
    )
    training = Training(hp, model.head, optimizer, sources, channels, paths, create_debugger(paths))
    training.fit()
    test = training.test()
    export(hp, model, channels, preprocessing, paths, training, test)


def fine_tune(
    hp: Hyperparameters,
    channels: dict[str, Channel],
    preprocessing: Preprocessing,
    runtime: Runtime,
    paths: TrainingPaths,
    cluster: Cluster,
) -> None:
    """The last backbone stages and the head, data-parallel over every worker."""
    torch.manual_seed(hp.seed)  # random-init backbones (pretrained=false) are keyed by the seed
    front, stages = build_stages(hp.pretrained, hp.train_layers)
    front = front.to(runtime.device).to(memory_format=torch.channels_last)
    sources = prepare_stage_features(front, channels, preprocessing, runtime, hp, paths, cluster)
    torch.manual_seed(hp.seed)
    head = build_head(len(channels["train"].classes), hp.hidden_units, hp.dropout)
    # channels_last like the frozen front's output (and DDP's gradient buckets match it).
    trained = nn.Sequential(stages, head).to(runtime.device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        [
            {"params": head.parameters(), "lr": hp.lr},
            {"params": stages.parameters(), "lr": hp.lr * hp.backbone_lr_factor},
        ],
        eps=hp.eps,
        weight_decay=hp.weight_decay,
    )
    debugger = create_debugger(paths) if cluster.is_leader else Debugger()
    training = FineTuning(
        hp, trained, optimizer, sources, channels, paths, debugger, cluster=cluster, runtime=runtime
    )
    training.fit()
    test = training.test()
    if cluster.is_leader:
        model = ImageClassifier(nn.Sequential(front, stages.folded()), head)
        export(hp, model, channels, preprocessing, paths, training, test)


def export(
    hp: Hyperparameters,
    model: ImageClassifier,
    channels: dict[str, Channel],
    preprocessing: Preprocessing,
    paths: TrainingPaths,
    training: Training,
    test: Result | None,
) -> None:
    classes = channels["train"].classes
    config = ModelConfig(
        classes=classes,
        preprocessing=preprocessing,
        architecture=architecture(
            hp.pretrained, hp.hidden_units, hp.dropout, len(classes), hp.train_layers
        ),
        hyperparameters=hp.to_dict(),
        metrics=training.final_metrics(test),
    )
    written = export_model(paths.model_dir, model, config)
    if hp.onnx:
        # Imported when used: onnxruntime's quantization tools take about 1 s to import,
        # which a tuning trial (onnx off) would pay for nothing.
        from trainer.onnx_export import export_onnx_after_training  # noqa: PLC0415

        export_onnx_after_training(paths.model_dir, written, channels)
    write_history(paths.output_data_dir, training.history)
    log.info(
        "model from epoch %d saved to %s (export check: max abs diff %.2e)",
        config.metrics["epoch"],
        paths.model_dir,
        written.export_check_max_abs_diff,
    )


def load_channels(paths: TrainingPaths, cluster: Cluster = SINGLE) -> dict[str, Channel]:
    """The image channels; classes come from train, the others may not add any."""
    train = scan_channel("train", paths.channel("train"))
    channels = {"train": train}
    for name in REQUIRED_CHANNELS[1:]:
        channels[name] = scan_channel(name, paths.channel(name), train.classes)
    for name in OPTIONAL_CHANNELS:
        if paths.channel(name).is_dir():
            channels[name] = scan_channel(name, paths.channel(name), train.classes)
    if not cluster.is_leader:
        return channels
    log.info(
        "classes %s; %s",
        list(train.classes),
        ", ".join(f"{name}: {len(channel)} files" for name, channel in channels.items()),
    )
    return channels


@dataclass
class BestEpoch:
    """The epoch of the lowest valid loss so far, and the trained weights of that epoch."""

    epoch: int
    valid_loss: float
    weights: dict[str, torch.Tensor]


@dataclass
class Training:
    """The epoch loop with early stopping, checkpoints, Debugger modes and scalars.

    `trained` is what the optimizer trains: the head, or the trainable stages and the
    head. Every worker that trains runs the loop (on all-reduced results, so they take the
    same decisions); the leader alone prints, checkpoints and writes.
    """

    hp: Hyperparameters
    trained: nn.Module
    optimizer: torch.optim.Optimizer
    sources: dict[str, FeatureSource]
    channels: dict[str, Channel]
    paths: TrainingPaths
    debugger: Debugger
    cluster: Cluster = SINGLE
    criterion: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    history: list[dict[str, float]] = field(default_factory=list)
    best: BestEpoch | None = None
    stale_epochs: int = 0
    scalars: Scalars | None = None  # the leader's TensorBoard event file

    @property
    def fingerprint(self) -> str:
        """Identifies the run a checkpoint belongs to: what changes the learned weights."""
        return fingerprint(
            {
                **trajectory_settings(self.hp),
                "data": {name: len(channel) for name, channel in self.channels.items()},
                "classes": list(self.channels["train"].classes),
            }
        )

    def fit(self) -> None:
        self.debugger.register(self.trained, self.criterion)
        if self.cluster.is_leader:
            self.scalars = Scalars(self.paths.tensorboard_dir)
        start = self.resume() + 1
        for epoch in range(start, self.hp.epochs + 1):
            started = time.monotonic()
            train = self.train_epoch(epoch, profile=epoch == start)
            self.debugger.eval_mode()
            valid = self.evaluate("valid")
            if epoch == start:
                self.check_unreadable("train", "valid")
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
                log.info(
                    "early stopping: valid loss has not improved for %d epochs", self.hp.patience
                )
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
        return train_one_epoch(self.trained, batches, self.optimizer, self.criterion, epoch)

    def evaluate(self, name: str) -> Result:
        source = self.sources[name]
        batches = source.batches(range(len(source)), self.hp.batch_size)
        return evaluate(self.trained, progress(batches, self._steps(source), name), self.criterion)

    def _steps(self, source: FeatureSource) -> int:
        return (len(source) + self.hp.batch_size - 1) // self.hp.batch_size

    def check_unreadable(self, *names: str) -> None:
        for name in names:
            check_unreadable(self.channels[name], self.sources[name].unreadable)

    def track_best(self, epoch: int, valid: Result) -> bool:
        """Keep the weights of the lowest valid loss; True when patience has run out."""
        if self.best is None or valid.loss < self.best.valid_loss:
            weights = {k: v.detach().cpu().clone() for k, v in self.trained.state_dict().items()}
            self.best = BestEpoch(epoch, valid.loss, weights)
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
        found = (
            load_checkpoint(self.paths.checkpoint_dir, self.fingerprint)
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
        if 0 < self.hp.patience <= self.stale_epochs:
            return self.hp.epochs  # it had already stopped early
        return int(state["epoch"])

    def test(self) -> Result | None:
        if "test" not in self.sources:
            return None
        result = self.evaluate("test")
        self.check_unreadable("test")
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


@dataclass
class FineTuning(Training):
    """Training of the last backbone stages and the head, on every worker's share of each
    global batch (DistributedDataParallel when there are several workers)."""

    runtime: Runtime | None = None
    seen: dict[str, Result] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.network: nn.Module = self.trained
        if self.cluster.distributed:
            from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

            device = self.cluster.device
            # BatchNorm stays in eval mode (frozen statistics): no buffer changes to broadcast.
            self.network = DistributedDataParallel(
                self.trained,
                device_ids=[device] if device.type == "cuda" else None,
                broadcast_buffers=False,
            )

    @property
    def _runtime(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def train_epoch(self, epoch: int, profile: bool) -> Result:
        torch.manual_seed(self.hp.seed + epoch)
        self.debugger.train_mode()
        source = self.sources["train"]
        groups = batch_groups(epoch_order(len(source), self.hp.seed, epoch), self.hp.batch_size)
        result = train_stages_epoch(
            self.network, source, groups, self.optimizer, self.cluster, self._runtime, epoch
        )
        self.seen["train"] = result
        return result

    def evaluate(self, name: str) -> Result:
        result = evaluate_stages(
            self.trained, self.sources[name], self.hp.batch_size, self.cluster, self._runtime
        )
        self.seen[name] = result
        return result

    def check_unreadable(self, *names: str) -> None:
        # Each pass covers every item once: what it did not count was unreadable.
        for name in names:
            check_unreadable(self.channels[name], len(self.channels[name]) - self.seen[name].count)


def _tagged(metrics: dict[str, float]) -> dict[str, float]:
    """`train_loss` -> `train/loss`: TensorBoard groups scalars by the part before '/'."""
    return {key.replace("_", "/", 1): value for key, value in metrics.items()}


def _named(split: str, result: Result) -> dict[str, float]:
    return {f"{split}_loss": result.loss, f"{split}_accuracy": result.accuracy}
