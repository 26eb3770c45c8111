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

import torch
from torch import nn

from model_artifact.config import ModelConfig
from model_artifact.preprocessing import Preprocessing
from model_artifact.torchscript import export_model
from trainer.cluster import SINGLE, Cluster
from trainer.context import JobContext
from trainer.contract import (
    OPTIONAL_CHANNELS,
    REQUIRED_CHANNELS,
    TrainingPaths,
    read_hyperparameters,
    training_paths,
)
from trainer.data import Channel, scan_channel
from trainer.debugger import Debugger, create_debugger
from trainer.engine import NO_AUTOCAST, Autocast, Result
from trainer.features import prepare_features
from trainer.history import write_history
from trainer.hyperparameters import Hyperparameters, parse_hyperparameters
from trainer.launcher import launch, plan_workers
from trainer.model import ImageClassifier, TrainableStages, architecture, build_head, build_stages
from trainer.runtime import select_runtime
from trainer.training import Training

log = logging.getLogger(__name__)


def main() -> None:
    logging.getLogger("trainer").setLevel(logging.INFO)
    paths = training_paths()
    hp = parse_hyperparameters(read_hyperparameters(paths))
    plan = plan_workers(paths, hp)
    if plan.world_size == 1:
        run(paths, hp)  # no launcher, no process group: the job as it always ran
    else:
        launch(plan, hp, run)


def run(paths: TrainingPaths, hp: Hyperparameters, cluster: Cluster = SINGLE) -> None:
    """The job with `hp` (the job's parsed hyperparameters), as `cluster`'s worker."""
    if cluster.is_leader:
        log.info("hyperparameters: %s", hp.to_dict())
    context = create_context(paths, hp, cluster)
    front, stages = trained_stages(context)
    prepared = prepare_features(context, front)
    if prepared is None:
        return  # a worker that helped compute the features: the leader trains the head
    frozen, sources = prepared
    # Seeded on its own, so the head starts from the same weights whether the backbone
    # was built here or loaded from the cache.
    torch.manual_seed(hp.seed)
    head = build_head(len(context.classes), hp.hidden_units, hp.dropout)
    trained, optimizer, trainers, autocast = what_trains(context, head, stages)
    debugger = create_debugger(paths) if trainers.is_leader else Debugger()
    training = Training(context, trained, optimizer, sources, debugger, trainers, autocast)
    training.fit()
    test = training.test()
    if trainers.is_leader:
        backbone = frozen if stages is None else nn.Sequential(frozen, stages.folded())
        export(context, ImageClassifier(backbone, head), training, test)


def create_context(paths: TrainingPaths, hp: Hyperparameters, cluster: Cluster) -> JobContext:
    channels = load_channels(paths, cluster)
    gpu = cluster.device if cluster.device.type == "cuda" else None
    runtime = select_runtime(hp.amp, gpu)
    if cluster.is_leader:
        log.info("runtime: %s", runtime.describe())
    preprocessing = Preprocessing.for_image_size(hp.image_size)
    return JobContext(paths, hp, cluster, channels, preprocessing, runtime)


def trained_stages(context: JobContext) -> tuple[nn.Module | None, TrainableStages | None]:
    """(frozen front, trainable stages) when backbone stages train; (None, None) when only
    the head trains (the frozen backbone then comes with its features)."""
    hp = context.hp
    if hp.train_layers == "head":
        return None, None
    torch.manual_seed(hp.seed)  # random-init backbones (pretrained=false) are keyed by the seed
    front, stages = build_stages(hp.pretrained, hp.train_layers)
    front = front.to(context.runtime.device).to(memory_format=torch.channels_last)
    return front, stages


def what_trains(
    context: JobContext, head: nn.Module, stages: TrainableStages | None
) -> tuple[nn.Module, torch.optim.Optimizer, Cluster, Autocast]:
    """What the optimizer trains, the optimizer, who trains it and in which precision.

    The head alone trains on the leader, in fp32. Trained stages train with the head on
    every worker (the stages at `lr` x `backbone_lr_factor`), in bf16 autocast where the
    hardware has it natively.
    """
    hp, runtime = context.hp, context.runtime
    if stages is None:
        trained: nn.Module = head.to(runtime.device)
        groups = [{"params": list(head.parameters()), "lr": hp.lr}]
        trainers, autocast = SINGLE, NO_AUTOCAST
    else:
        # channels_last like the frozen front's output (and DDP's gradient buckets match it).
        trained = nn.Sequential(stages, head).to(runtime.device)
        trained = trained.to(memory_format=torch.channels_last)
        groups = [
            {"params": list(head.parameters()), "lr": hp.lr},
            {"params": list(stages.parameters()), "lr": hp.lr * hp.backbone_lr_factor},
        ]
        trainers, autocast = context.cluster, runtime.training_autocast
    optimizer = torch.optim.AdamW(groups, lr=hp.lr, eps=hp.eps, weight_decay=hp.weight_decay)
    return trained, optimizer, trainers, autocast


def export(
    context: JobContext, model: ImageClassifier, training: Training, test: Result | None
) -> None:
    """The end of the job, on the leader: the servable model, its config and the history.

    `test` is the test pass of the exported weights (with every item's prediction), or
    None without a test channel.
    """
    hp, paths, classes = context.hp, context.paths, context.classes
    config = ModelConfig(
        classes=classes,
        preprocessing=context.preprocessing,
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

        export_onnx_after_training(paths.model_dir, written, context.channels)
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
