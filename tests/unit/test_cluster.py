"""The cluster contract: hosts, rendezvous, shares of a batch, failure reasons, scalars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.cluster import Cluster
from trainer.contract import TrainingPaths, read_resource_config, rendezvous_address
from trainer.engine import shares
from trainer.errors import ClientError
from trainer.hyperparameters import parse_hyperparameters
from trainer.launcher import failure_reason, plan_workers
from trainer.scalars import Scalars
from trainer.sources import batch_groups


def _paths(tmp_path: Path, hosts: list[str], current: str, distribution: str) -> TrainingPaths:
    paths = TrainingPaths(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.resource_config_file.write_text(
        json.dumps({"hosts": hosts, "current_host": current, "network_interface_name": "eth0"})
    )
    paths.input_data_config_file.write_text(
        json.dumps({"train": {"S3DistributionType": distribution}})
    )
    return paths


def test_hosts_keep_sagemakers_order_and_the_first_hosts_the_rendezvous(tmp_path: Path) -> None:
    hosts = ["algo-2", "algo-10", "algo-1"]  # sorting would make algo-1 the leader
    resources = read_resource_config(_paths(tmp_path, hosts, "algo-1", "FullyReplicated"))
    assert resources.host_rank == 2
    assert rendezvous_address(resources, {}) == ("algo-2", 29500)
    assert rendezvous_address(resources, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "7"}) == (
        "127.0.0.1",
        7,
    )
    single = read_resource_config(_paths(tmp_path / "one", ["algo-1"], "algo-1", "x"))
    assert rendezvous_address(single, {})[0] == "127.0.0.1"  # no DNS needed for one host


def test_workers_per_host_and_sharded_channels(tmp_path: Path) -> None:
    hp = parse_hyperparameters({"workers_per_host": "3"})
    sharded = _paths(tmp_path, ["algo-1", "algo-2"], "algo-2", "ShardedByS3Key")
    with pytest.raises(ClientError, match="channels train are not FullyReplicated"):
        plan_workers(sharded, hp)
    alone = _paths(tmp_path / "one", ["algo-1"], "algo-1", "ShardedByS3Key")
    assert plan_workers(alone, hp).world_size == 3
    assert plan_workers(alone, parse_hyperparameters({})).workers_per_host == 1  # a CPU host


def test_train_layers_names_what_is_allowed() -> None:
    with pytest.raises(ClientError, match="expected head, layer4, layer3 or all"):
        parse_hyperparameters({"train_layers": "layer2"})
    assert parse_hyperparameters({"train_layers": "LAYER4"}).train_layers == "layer4"


def test_each_worker_takes_every_nth_item_and_fills_an_empty_share() -> None:
    groups = batch_groups(list(range(10)), 4)  # [0..3], [4..7], [8, 9]
    three = [shares(groups, Cluster(rank=rank, world_size=3)) for rank in range(3)]
    assert three[0] == ([[0, 3], [4, 7], [8]], [False, False, False])
    assert three[2] == ([[2], [6], [8]], [False, False, True])  # weighted zero
    covered = sorted(
        i
        for parts, fillers in three
        for part, filler in zip(parts, fillers, strict=True)
        if not filler
        for i in part
    )
    assert covered == list(range(10))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"message": "ClientError: channel 'valid' is missing"}, "channel 'valid' is missing"),
        ({"message": "JobFailedError: worker 1 on algo-2: bad"}, "worker 1 on algo-2: bad"),
        (
            {"message": "RuntimeError: boom\n  at line"},
            "worker 0 on algo-1 failed: RuntimeError: boom at line",
        ),
        (
            "Signal 9 (SIGKILL) received by PID 7",
            "worker 0 on algo-1 stopped: Signal 9 (SIGKILL) received by PID 7",
        ),
    ],
)
def test_a_failed_workers_record_becomes_one_line(message: object, reason: str) -> None:
    assert failure_reason(0, "algo-1", message) == reason


def test_scalars_are_read_back_by_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import (  # noqa: PLC0415
        EventAccumulator,
    )

    scalars = Scalars(tmp_path)
    scalars.add(1, {"train/loss": 0.75, "lr/head": 1e-3})
    scalars.add(2, {"train/loss": 0.5})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["lr/head", "train/loss"]
    assert [(s.step, s.value) for s in events.Scalars("train/loss")] == [(1, 0.75), (2, 0.5)]
    assert events.Scalars("lr/head")[0].value == pytest.approx(1e-3)
