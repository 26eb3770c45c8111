"""Feature sources and the feature cache, on a tiny front and a few small images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from launch.synthetic_images import make_image_folder
from model_artifact.preprocessing import Preprocessing
from trainer import feature_cache as features
from trainer.cluster import Cluster
from trainer.contract import FEATURE_CACHE_CHANNEL, TrainingPaths
from trainer.data import Channel, scan_channel
from trainer.features import image_sources, job_cache, prepare_stage_features
from trainer.hyperparameters import Hyperparameters, parse_hyperparameters
from trainer.runtime import Runtime
from trainer.sources import CachedFeatures, ImageFeatures, batch_groups

SIZE = 32
CPU = Runtime(torch.device("cpu"), None)
PREPROCESSING = Preprocessing.for_image_size(SIZE)


def _front() -> nn.Module:
    """Stands in for the frozen stages: a conv whose output is 4-D, as layer3's is."""
    torch.manual_seed(0)
    return nn.Conv2d(3, 4, 3, stride=8).eval()


def _hp(**overrides: str) -> Hyperparameters:
    settings = {"image_size": str(SIZE), "batch_size": "3", "num_workers": "0", "amp": "off"}
    return parse_hyperparameters({**settings, **overrides})


@pytest.fixture
def channels(tmp_path: Path) -> dict[str, Channel]:
    make_image_folder(tmp_path / "data" / "train", per_class=4)
    return {"train": scan_channel("train", tmp_path / "data" / "train")}


def _same(left: list[tuple[torch.Tensor, torch.Tensor]], right: list) -> bool:
    return len(left) == len(right) and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(left, right, strict=True)
    )


def test_batches_in_an_order_are_the_batches_of_its_groups(channels: dict[str, Channel]) -> None:
    source = image_sources(channels, _front(), PREPROCESSING, CPU, _hp())["train"]
    order = [5, 0, 7, 2, 1, 6, 3, 4]
    by_order = list(source.batches(order, 3))
    assert [len(labels) for _, labels in by_order] == [3, 3, 2]
    assert _same(by_order, list(source.batches_of(batch_groups(order, 3))))
    # The cached copy hands out the very same batches (its own, faster path).
    [(every_feature, every_label)] = source.batches(range(len(source)), len(source))
    cached = CachedFeatures(every_feature, every_label, torch.device("cpu"))
    assert _same(list(cached.batches(order, 3)), by_order)
    assert _same(list(cached.batches_of(batch_groups(order, 3))), by_order)


def test_a_cache_lists_a_channels_files_once(
    channels: dict[str, Channel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys: list[str] = []
    real_key = features.cache_key

    def counted(channel: Channel, identity: dict) -> str:
        keys.append(channel.name)
        return real_key(channel, identity)

    monkeypatch.setattr(features, "cache_key", counted)
    cache = job_cache(PREPROCESSING, CPU, _hp(), TrainingPaths(tmp_path / "job"), "layer3")
    source = image_sources(channels, _front(), PREPROCESSING, CPU, _hp())["train"]
    assert not cache.has(channels["train"])
    cache.compute(source, 3)
    assert cache.has(channels["train"])
    assert cache.load(channels["train"]) is not None
    assert keys == ["train"]


@dataclass(frozen=True)
class PeerRefuses(Cluster):
    """This worker of two, whose peer cannot keep the stage cache (less free disk): every
    vote comes back False. Records this worker's votes."""

    votes: list[list[bool]] = field(default_factory=list)

    def all_agree(self, flags: list[bool]) -> list[bool]:  # type: ignore[override]
        self.votes.append(list(flags))
        return [False] * len(flags)


def test_no_worker_keeps_the_stage_cache_when_one_cannot(
    channels: dict[str, Channel], tmp_path: Path
) -> None:
    hp = _hp(train_layers="layer4")
    # Alone, this worker keeps the front's output.
    alone = TrainingPaths(tmp_path / "alone")
    kept = prepare_stage_features(_front(), channels, PREPROCESSING, CPU, hp, alone)
    assert isinstance(kept["train"], CachedFeatures)
    assert list((alone.output_data_dir / FEATURE_CACHE_CHANNEL).glob("train-*.pt"))
    # With a peer that refuses, it votes to cache, is outvoted, and runs the front on every
    # pass like its peer: no entry computed, none written, no further collective.
    paths = TrainingPaths(tmp_path / "worker")
    cluster = PeerRefuses(rank=0, world_size=2)
    sources = prepare_stage_features(_front(), channels, PREPROCESSING, CPU, hp, paths, cluster)
    assert cluster.votes == [[True]]
    assert isinstance(sources["train"], ImageFeatures)
    assert not (paths.output_data_dir / FEATURE_CACHE_CHANNEL).exists()
