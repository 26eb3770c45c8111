"""Where the head's input features come from, and the cache that keeps them.

With the backbone frozen, its output for an image never changes, so the textbook
loop spends almost all its time recomputing the same numbers every epoch (and a
tuning run repeats that in every trial). A cache entry is keyed by everything the
features depend on, so trials over the same data and preprocessing share it.
`prepare_features` is the job's policy: what is read from the cache, what is
computed, and where it is kept; `prepare_stage_features` is the same for a job that
trains the last backbone stages (the cache then keeps the last frozen stage's output,
when that fits).

With several workers, each batch of a channel is computed by one worker, round robin,
and shared with all of them (`ShardedFeatures`): every worker ends with the features a
one-process job computes, batch for batch, and only the leader writes the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_artifact import torchscript
from model_artifact.preprocessing import Preprocessing, eval_transform
from trainer.cluster import SINGLE, Cluster
from trainer.contract import FEATURE_CACHE_CHANNEL, TrainingPaths
from trainer.data import UNREADABLE, Channel, ImageDataset
from trainer.engine import Batch, FeatureSource, ImageFeatures, backbone_features, batch_groups
from trainer.hyperparameters import Hyperparameters
from trainer.model import BACKBONE, backbone_weights, build_backbone, frozen_through
from trainer.progress import progress
from trainer.runtime import Runtime
from trainer.storage import atomic_write, digest

log = logging.getLogger(__name__)


class CachedFeatures:
    """Features and labels of a whole channel, held on the training device."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
        self.features = features.to(device)
        self.labels = labels.to(device)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def unreadable(self) -> int:
        return int((self.labels == UNREADABLE).sum())

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[Batch]:
        index = torch.as_tensor(order, device=self.labels.device)
        for chunk in index.split(batch_size):
            yield self.features[chunk], self.labels[chunk]

    def batches_of(self, groups: Sequence[Sequence[int]]) -> Iterator[Batch]:
        for group in groups:
            index = torch.as_tensor(group, device=self.labels.device)
            yield self.features[index], self.labels[index]


class ShardedFeatures:
    """An ImageFeatures whose batches are computed by the workers in turn and shared.

    Batch k of a pass is computed by worker k mod N, from the same images a one-process
    job puts in batch k, and every worker receives every batch in order.
    """

    def __init__(self, source: ImageFeatures, cluster: Cluster, image_size: int) -> None:
        self.source = source
        self.cluster = cluster
        # One item's features, so that a worker without a batch in a round can take part.
        probe = torch.zeros(1, 3, image_size, image_size)
        self.template = backbone_features(source.backbone, probe, source.runtime)[0].cpu()
        self.unreadable_seen: set[int] = set()

    @property
    def dataset(self) -> ImageDataset:
        return self.source.dataset

    def __len__(self) -> int:
        return len(self.source)

    @property
    def unreadable(self) -> int:
        return len(self.unreadable_seen)

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[Batch]:
        return self.batches_of(batch_groups(order, batch_size))

    def batches_of(self, groups: Sequence[Sequence[int]]) -> Iterator[Batch]:
        rank, world = self.cluster.rank, self.cluster.world_size
        own = self.source.batches_of(groups[rank::world])
        rows = max(len(group) for group in groups)
        for first in range(0, len(groups), world):
            batch = next(own) if first + rank < len(groups) else None
            gathered = self.cluster.gather_batches(batch, rows, self.template)
            for group, (features, labels) in zip(groups[first:], gathered, strict=False):
                self.unreadable_seen.update(
                    index for index, label in zip(group, labels.tolist(), strict=True) if label < 0
                )
                yield features, labels


def cache_key(channel: Channel, identity: dict[str, Any]) -> str:
    """A digest of the channel's files (relative path and size) and what computes the features.

    Sizes, not modification times: SageMaker downloads a channel afresh for every job.
    """
    listing = [
        (str(path.relative_to(channel.root)), path.stat().st_size, label)
        for path, label in channel.samples
    ]
    return digest({"files": listing, "classes": channel.classes, **identity}, 24)


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Parallel trials wait for the first one to compute an entry instead of repeating it."""
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compute(
    source: ImageFeatures | ShardedFeatures, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    order = list(range(len(source)))
    total = (len(order) + batch_size - 1) // batch_size
    features, labels = [], []
    for batch_features, batch_labels in progress(
        source.batches(order, batch_size), total, f"features {source.dataset.channel.name}"
    ):
        features.append(batch_features.cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(features), torch.cat(labels)


class FeatureCache:
    """One job's view of the cache: entries are read from the first of `read_dirs` (then
    `write_dir`) that has them, and new ones are written to `write_dir`.

    `backbone_identity` names the backbone's weights; `features_identity` adds everything
    else the features depend on (preprocessing, precision). With `keep_backbone`, the
    backbone is kept beside the features as TorchScript, so that a later trial that finds
    every channel cached needs neither torchvision nor the weights file.
    """

    def __init__(
        self,
        backbone_identity: dict[str, Any],
        features_identity: dict[str, Any],
        read_dirs: Sequence[Path],
        write_dir: Path,
        device: torch.device,
        keep_backbone: bool,
    ) -> None:
        self.backbone_identity = backbone_identity
        self.features_identity = {**backbone_identity, **features_identity}
        self.directories = [*read_dirs, write_dir]
        self.write_dir = write_dir
        self.device = device
        self.keep_backbone = keep_backbone
        # Entry names by channel name: a job's channels keep their files while it runs, and
        # each name costs a stat of every file of the channel.
        self._entry_names: dict[str, str] = {}

    def _find(self, name: str) -> Path | None:
        return next((d / name for d in self.directories if (d / name).is_file()), None)

    def _entry_name(self, channel: Channel) -> str:
        if channel.name not in self._entry_names:
            key = cache_key(channel, self.features_identity)
            self._entry_names[channel.name] = f"{channel.name}-{key}.pt"
        return self._entry_names[channel.name]

    def _backbone_name(self) -> str:
        return f"backbone-{digest(self.backbone_identity, 24)}.pt"

    def has(self, channel: Channel) -> bool:
        return self._find(self._entry_name(channel)) is not None

    def load(self, channel: Channel) -> CachedFeatures | None:
        path = self._find(self._entry_name(channel))
        return None if path is None else _load(path, self.device)

    def compute_shared(
        self, source: ShardedFeatures, batch_size: int, save: bool = True
    ) -> CachedFeatures:
        """Compute a channel's features with every worker; the leader saves them."""
        features, labels = _compute(source, batch_size)
        if save and source.cluster.is_leader:
            path = self.write_dir / self._entry_name(source.dataset.channel)
            self.write_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda to: torch.save({"features": features, "labels": labels}, to))
            log.info(
                "feature cache: computed %d items of %s into %s",
                len(labels),
                source.dataset.channel.name,
                path,
            )
        return CachedFeatures(features, labels, self.device)

    def compute(self, source: ImageFeatures, batch_size: int) -> CachedFeatures:
        """Compute and save the channel's features, unless another trial did while we waited."""
        channel = source.dataset.channel
        path = self.write_dir / self._entry_name(channel)
        self.write_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(path.with_name(f"{path.name}.lock")):
            if path.is_file():
                return _load(path, self.device)
            features, labels = _compute(source, batch_size)
            atomic_write(path, lambda to: torch.save({"features": features, "labels": labels}, to))
        log.info("feature cache: computed %d items of %s into %s", len(labels), channel.name, path)
        return CachedFeatures(features, labels, self.device)

    def load_backbone(self) -> nn.Module | None:
        path = self._find(self._backbone_name())
        if path is None:
            return None
        log.info("feature cache: reusing the backbone %s", path)
        return torchscript.load(path)

    def save_backbone(self, backbone: nn.Module, image_size: int) -> None:
        path = self.write_dir / self._backbone_name()
        if not self.keep_backbone or path.is_file():
            return
        self.write_dir.mkdir(parents=True, exist_ok=True)
        device = next(backbone.parameters()).device  # traced where it is; loaded onto the CPU
        example = torch.zeros(1, 3, image_size, image_size, device=device)
        traced = torchscript.trace(backbone, example)
        atomic_write(path, lambda to: torchscript.save(traced, to))


def _load(path: Path, device: torch.device) -> CachedFeatures:
    entry = torch.load(path, map_location="cpu", weights_only=True)
    log.info("feature cache: reusing %s", path)
    return CachedFeatures(entry["features"], entry["labels"], device)


def prepare_features(
    channels: dict[str, Channel],
    preprocessing: Preprocessing,
    runtime: Runtime,
    hp: Hyperparameters,
    paths: TrainingPaths,
    cluster: Cluster = SINGLE,
) -> tuple[nn.Module, dict[str, FeatureSource]] | None:
    """The frozen backbone, and per channel where the head's input features come from.

    Cache on (the default): a cached channel is never decoded, and when every channel and
    the backbone are cached (any tuning trial after the first) the job reads no image and
    builds no backbone. Cache off: the backbone runs on every image in every epoch.

    With several workers the head trains on the leader alone (see job.py), so only the
    leader gets a result; the others help compute what its cache lacks, then get None.
    """
    if cluster.distributed:
        return _prepare_shared(channels, preprocessing, runtime, hp, paths, cluster)
    if hp.feature_cache == "off":
        log.info("feature cache off: the backbone runs on every image in every epoch")
        backbone = new_backbone(hp, runtime)
        return backbone, dict(image_sources(channels, backbone, preprocessing, runtime, hp))
    cache = job_cache(preprocessing, runtime, hp, paths)
    cached = {name: cache.load(channel) for name, channel in channels.items()}
    missing = {name: channels[name] for name, source in cached.items() if source is None}
    loaded = None if missing else cache.load_backbone()
    backbone = loaded if loaded is not None else new_backbone(hp, runtime)
    cache.save_backbone(backbone, hp.image_size)
    sources: dict[str, FeatureSource] = {
        name: source for name, source in cached.items() if source is not None
    }
    for name, source in image_sources(missing, backbone, preprocessing, runtime, hp).items():
        sources[name] = cache.compute(source, hp.batch_size)
    return backbone, sources


def _prepare_shared(
    channels: dict[str, Channel],
    preprocessing: Preprocessing,
    runtime: Runtime,
    hp: Hyperparameters,
    paths: TrainingPaths,
    cluster: Cluster,
) -> tuple[nn.Module, dict[str, FeatureSource]] | None:
    """prepare_features with several workers: the leader's cache decides what to compute.

    With feature_cache=off the workers still run the backbone once per image (epochs
    after the first would otherwise repeat the extraction on the leader alone), and the
    features stay in memory.
    """
    keep = hp.feature_cache != "off"
    cache = job_cache(preprocessing, runtime, hp, paths)
    # Only the leader's answer counts, so only the leader looks (a look stats every file of
    # the channel); the others' [] is a placeholder that the broadcast replaces.
    present = cluster.broadcast(
        [keep and cache.has(channel) for channel in channels.values()] if cluster.is_leader else []
    )
    missing = {
        name: channels[name] for name, cached in zip(channels, present, strict=True) if not cached
    }
    if not missing:
        return (
            prepare_features(channels, preprocessing, runtime, hp, paths)
            if cluster.is_leader
            else None
        )
    if not keep:
        log.info(
            "feature cache off: %d workers run the backbone once per image; the features "
            "stay in memory",
            cluster.world_size,
        )
    backbone = new_backbone(hp, runtime)
    computed = {
        name: cache.compute_shared(
            ShardedFeatures(source, cluster, hp.image_size), hp.batch_size, keep
        )
        for name, source in image_sources(
            missing, backbone, preprocessing, runtime, hp, cluster
        ).items()
    }
    if not cluster.is_leader:
        return None
    if keep:
        cache.save_backbone(backbone, hp.image_size)
    sources: dict[str, FeatureSource] = {}
    for name, channel in channels.items():
        sources[name] = computed[name] if name in computed else _require(cache.load(channel))
    return backbone, sources


def _require(source: CachedFeatures | None) -> CachedFeatures:
    assert source is not None, "the leader found this entry a moment ago"
    return source


def prepare_stage_features(
    front: nn.Module,
    channels: dict[str, Channel],
    preprocessing: Preprocessing,
    runtime: Runtime,
    hp: Hyperparameters,
    paths: TrainingPaths,
    cluster: Cluster = SINGLE,
) -> dict[str, FeatureSource]:
    """Per channel, the frozen front's output for the stages that train.

    Kept in the cache (on every worker: each trains on its share of every batch) when it
    fits: the output of layer3 is 49x the size of the pooled features, so a large data set
    at a large image size can outgrow the disk or the memory; then every epoch runs the
    front on every image, and the log says why.
    """
    sources = image_sources(channels, front, preprocessing, runtime, hp, cluster)
    cache = job_cache(preprocessing, runtime, hp, paths, frozen_through(hp.train_layers))
    refusal = stage_cache_refusal(front, channels, runtime, hp, cache.write_dir, cluster)
    # Hosts differ in free disk: all cache or none, or the workers' collectives would not pair.
    if not cluster.all_agree([refusal is None])[0]:
        log.info("feature cache off: %s", refusal or "another worker cannot keep the cache")
        return dict(sources)
    present = cluster.all_agree([cache.has(channel) for channel in channels.values()])
    prepared: dict[str, FeatureSource] = {}
    for (name, channel), cached in zip(channels.items(), present, strict=True):
        if cached:
            prepared[name] = _require(cache.load(channel))
        elif cluster.distributed:
            shared = ShardedFeatures(sources[name], cluster, hp.image_size)
            prepared[name] = cache.compute_shared(shared, hp.batch_size)
        else:
            prepared[name] = cache.compute(sources[name], hp.batch_size)
    return prepared


# Of the free disk and of each worker's share of memory, what a stage cache may take.
STAGE_CACHE_SHARE = 0.5


def stage_cache_refusal(
    front: nn.Module,
    channels: dict[str, Channel],
    runtime: Runtime,
    hp: Hyperparameters,
    write_dir: Path,
    cluster: Cluster,
) -> str | None:
    """Why the front's output is not cached in `write_dir`, or None when it is."""
    if hp.feature_cache == "off":
        return "feature_cache=off: the frozen stages run on every image in every epoch"
    through = frozen_through(hp.train_layers)
    if not through:
        return f"train_layers={hp.train_layers} freezes no stage: nothing to keep"
    probe = torch.zeros(1, 3, hp.image_size, hp.image_size)
    item = backbone_features(front, probe.to(runtime.device), runtime)[0]
    needed = item.numel() * item.element_size() * sum(len(c) for c in channels.values())
    existing = next(folder for folder in (write_dir, *write_dir.parents) if folder.exists())
    disk = shutil.disk_usage(existing).free
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // cluster.local_world_size
    if needed <= STAGE_CACHE_SHARE * min(disk, memory):
        return None
    return (
        f"the {through} output of every image takes {needed / 1e9:.1f} GB, over "
        f"{STAGE_CACHE_SHARE:.0%} of the free disk ({disk / 1e9:.1f} GB) or of each worker's "
        f"memory ({memory / 1e9:.1f} GB); the frozen stages run on every image in every epoch"
    )


def decode_workers(hp: Hyperparameters, cluster: Cluster) -> int:
    """The host's decoding processes, shared among its workers."""
    if hp.num_workers == 0:
        return 0
    return max(1, hp.num_workers // cluster.local_world_size)


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
    cluster: Cluster = SINGLE,
) -> dict[str, ImageFeatures]:
    """Decoded images through the backbone, per channel (none: torchvision is not imported)."""
    if not channels:
        return {}
    transform = eval_transform(preprocessing)
    workers = decode_workers(hp, cluster)
    return {
        name: ImageFeatures(
            ImageDataset(channel, transform, hp.image_size), backbone, runtime, workers
        )
        for name, channel in channels.items()
    }


def job_cache(
    preprocessing: Preprocessing | None,
    runtime: Runtime,
    hp: Hyperparameters,
    paths: TrainingPaths,
    through: str = "",
) -> FeatureCache:
    """Read from the feature_cache channel when there is one, and write there when it is
    writable (local tuning shares one folder between trials); else write to output data.

    `through`: the last frozen stage whose output is cached, when stages train; such
    entries stay on the CPU (they can be large) and keep no backbone.
    """
    shared = paths.channel(FEATURE_CACHE_CHANNEL)
    writable = shared.is_dir() and os.access(shared, os.W_OK)
    backbone = (
        f"{BACKBONE}-batchnorm-folded"
        if not through
        else (f"{BACKBONE}-through-{through}-batchnorm-folded")
    )
    return FeatureCache(
        backbone_identity={
            "backbone": backbone,
            "weights": backbone_weights(hp.pretrained, hp.seed),
            "torch": torch.__version__,
        },
        features_identity={
            "preprocessing": preprocessing.to_dict() if preprocessing else None,
            "precision": str(runtime.amp_dtype),
        },
        read_dirs=[shared] if shared.is_dir() else [],
        write_dir=shared if writable else paths.output_data_dir / FEATURE_CACHE_CHANNEL,
        device=torch.device("cpu") if through else runtime.device,
        # Only a shared folder keeps the backbone: in output data it would add ~100 MB to
        # every job's output archive.
        keep_backbone=writable and not through,
    )
