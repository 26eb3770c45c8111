"""The job's feature policy: what is read from the cache, what is computed, where it is kept.

The frozen part of the network (the whole backbone when only the head trains, the stages
before the trained ones otherwise) is a fixed function. `prepare_features` decides, per
channel, where the trained layers' input comes from (sources.py): the cache, a
computation done once and kept, or the images on every pass (the textbook loop). One
rule for every mode:
- the cache is used unless `feature_cache=off`, or the frozen output is too large
  (`cache_refusal`); all workers agree, or their collectives would not pair;
- an entry is computed when a worker that trains lacks it; with several workers each
  batch is computed by one worker, round robin, and shared with all (`ShardedFeatures`),
  so every worker ends with the features a one-process job computes, and only the leader
  writes the cache;
- only the leader trains the head (job.py says why): the other workers help compute
  what the leader's cache lacks and get nothing back. Without the cache they still
  compute each image once, in memory, instead of leaving the leader to recompute every
  epoch alone.
When only the head trains and every channel and the backbone are cached (any tuning trial
after the first), the job reads no image and builds no backbone.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from model_artifact.preprocessing import Preprocessing, eval_transform
from trainer.cluster import SINGLE, Cluster
from trainer.context import JobContext
from trainer.contract import FEATURE_CACHE_CHANNEL, TrainingPaths
from trainer.data import Channel, ImageDataset
from trainer.feature_cache import FeatureCache
from trainer.hyperparameters import Hyperparameters
from trainer.model import BACKBONE, backbone_weights, build_backbone, frozen_through
from trainer.runtime import Runtime
from trainer.sources import (
    CachedFeatures,
    FeatureSource,
    ImageFeatures,
    ShardedFeatures,
    backbone_features,
)

log = logging.getLogger(__name__)

Features = tuple[nn.Module, dict[str, FeatureSource]]  # the frozen part, a source per channel


def prepare_features(context: JobContext, front: nn.Module | None = None) -> Features | None:
    """The frozen part of the network and, per channel, where the trained layers' input
    comes from; None on a worker that does not train.

    `front`: the frozen stages before those that train (built with them). None when only
    the head trains: the frozen part is then the whole backbone, which the cache may
    already hold.
    """
    hp, cluster, channels = context.hp, context.cluster, context.channels
    everyone_trains = front is not None
    trains = everyone_trains or cluster.is_leader
    cache = job_cache(
        context.preprocessing,
        context.runtime,
        hp,
        context.paths,
        frozen_through(hp.train_layers) if everyone_trains else "",
    )
    refusal = cache_refusal(context, front, cache.write_dir)
    # Hosts differ in free disk: all cache or none, or the workers' collectives would not pair.
    keep = cluster.all_agree([refusal is None])[0]
    if not keep and (everyone_trains or not cluster.distributed):
        log.info("feature cache off: %s", refusal or "another worker cannot keep the cache")
        frozen = front if front is not None else new_backbone(hp, context.runtime)
        return frozen, dict(_image_sources(context, channels, frozen))
    if not keep:
        log.info(
            "feature cache off: %d workers run the backbone once per image; the features "
            "stay in memory",
            cluster.world_size,
        )
    # A worker that does not train votes yes without looking (a look stats every file of
    # the channel): only the entries of the workers that train count.
    present = cluster.all_agree(
        [keep and (not trains or cache.has(channel)) for channel in channels.values()]
    )
    missing = {
        name: channels[name] for name, cached in zip(channels, present, strict=True) if not cached
    }
    if not missing and not trains:
        return None
    frozen = front if front is not None else _backbone(context, cache, reuse=not missing)
    images = _image_sources(context, missing, frozen)
    sources: dict[str, FeatureSource] = {}
    for name, channel in channels.items():
        if name in images and cluster.distributed:
            shared = ShardedFeatures(images[name], cluster, hp.image_size)
            sources[name] = cache.compute_shared(shared, hp.batch_size, keep)
        elif name in images:
            sources[name] = cache.compute(images[name], hp.batch_size)
        elif trains:
            sources[name] = _require(cache.load(channel))
    if not trains:
        return None
    if keep and front is None:
        cache.save_backbone(frozen, hp.image_size)
    return frozen, sources


def prepare_stage_features(
    front: nn.Module,
    channels: dict[str, Channel],
    preprocessing: Preprocessing,
    runtime: Runtime,
    hp: Hyperparameters,
    paths: TrainingPaths,
    cluster: Cluster = SINGLE,
) -> dict[str, FeatureSource]:
    """`prepare_features` for the stages after `front`, from the context's parts."""
    context = JobContext(paths, hp, cluster, channels, preprocessing, runtime)
    prepared = prepare_features(context, front)
    assert prepared is not None, "every worker trains the stages"
    return prepared[1]


def _backbone(context: JobContext, cache: FeatureCache, reuse: bool) -> nn.Module:
    """The frozen backbone: the cache's copy when `reuse` and it has one, else built."""
    loaded = cache.load_backbone() if reuse else None
    return loaded if loaded is not None else new_backbone(context.hp, context.runtime)


def _require(source: CachedFeatures | None) -> CachedFeatures:
    assert source is not None, "every worker that trains found this entry a moment ago"
    return source


def _image_sources(
    context: JobContext, channels: dict[str, Channel], frozen: nn.Module
) -> dict[str, ImageFeatures]:
    return image_sources(
        channels, frozen, context.preprocessing, context.runtime, context.hp, context.cluster
    )


# Of the free disk and of each worker's share of memory, what a stage cache may take.
STAGE_CACHE_SHARE = 0.5


def cache_refusal(context: JobContext, front: nn.Module | None, write_dir: Path) -> str | None:
    """Why the frozen part's output is not cached in `write_dir`, or None when it is.

    The backbone's pooled output (8 KB an image) always fits; a frozen front's output is
    kept when it fits: layer3's is 49 times larger, so a large data set at a large image
    size can outgrow the disk or the memory (every worker holds it: each trains on its
    share of every batch).
    """
    hp = context.hp
    frozen = "the backbone runs" if front is None else "the frozen stages run"
    if hp.feature_cache == "off":
        return f"feature_cache=off: {frozen} on every image in every epoch"
    if front is None:
        return None
    through = frozen_through(hp.train_layers)
    if not through:
        return f"train_layers={hp.train_layers} freezes no stage: nothing to keep"
    probe = torch.zeros(1, 3, hp.image_size, hp.image_size)
    item = backbone_features(front, probe.to(context.runtime.device), context.runtime)[0]
    needed = item.numel() * item.element_size() * sum(len(c) for c in context.channels.values())
    existing = next(folder for folder in (write_dir, *write_dir.parents) if folder.exists())
    disk = shutil.disk_usage(existing).free
    memory = (
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // context.cluster.local_world_size
    )
    if needed <= STAGE_CACHE_SHARE * min(disk, memory):
        return None
    return (
        f"the {through} output of every image takes {needed / 1e9:.1f} GB, over "
        f"{STAGE_CACHE_SHARE:.0%} of the free disk ({disk / 1e9:.1f} GB) or of each worker's "
        f"memory ({memory / 1e9:.1f} GB); {frozen} on every image in every epoch"
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
    entries stay in host memory (they can be large) and keep no backbone.
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
        device=runtime.device,
        storage=torch.device("cpu") if through else runtime.device,
        # Only a shared folder keeps the backbone: in output data it would add ~100 MB to
        # every job's output archive.
        keep_backbone=writable and not through,
    )
