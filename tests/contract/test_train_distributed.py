"""Several workers, as SageMaker runs them: two hosts as two `train` processes meeting on
loopback (gloo), and two workers on one host. They must learn what one process learns."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import torch

from launch.local.jobdir import layout_job_dir
from launch.synthetic_images import make_dataset
from support.jobs import (
    TINY,
    history,
    host_log,
    run_in_process,
    start_tiny_hosts,
    train_tiny,
    train_tiny_hosts,
)
from trainer.checkpoint import CHECKPOINT_FILE
from trainer.contract import FEATURE_CACHE_CHANNEL, TrainingPaths
from trainer.evaluation import EVALUATION_FILE, OUTPUT_FILES

pytestmark = pytest.mark.contract

# A failure must end every host's `train` within this; a crashed peer is seen in seconds.
FAILURE_BOUND_S = 60


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), per_class=10)


@pytest.fixture(scope="module")
def one_process(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    job_dir = tmp_path_factory.mktemp("one")
    layout_job_dir(job_dir, data, TINY)
    run_in_process(job_dir)
    return job_dir


def _cache_entries(job_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    folder = TrainingPaths(job_dir).output_data_dir / FEATURE_CACHE_CHANNEL
    return {
        path.name: torch.load(path, weights_only=True) for path in sorted(folder.glob("*-*.pt"))
    }


def _same_rows(left: list[dict], right: list[dict], **tolerance: float) -> bool:
    return len(left) == len(right) and all(
        a == pytest.approx(b, **tolerance) for a, b in zip(left, right, strict=True)
    )


def _config(job_dir: Path) -> dict:
    return json.loads((job_dir / "model" / "model_config.json").read_text())


def _evaluation(job_dir: Path) -> dict:
    return json.loads((TrainingPaths(job_dir).output_data_dir / EVALUATION_FILE).read_text())


def test_two_hosts_compute_the_features_and_head_of_one_process(
    data: Path, one_process: Path, tmp_path: Path
) -> None:
    assert train_tiny_hosts(data, tmp_path, hosts=2) == 0, host_log(tmp_path)[-3000:]
    leader, other = tmp_path / "algo-1", tmp_path / "algo-2"
    # Each batch computed by one of the two hosts from the images one process puts in it:
    # the very same features.
    expected, shared = _cache_entries(one_process), _cache_entries(leader)
    assert sorted(shared) == sorted(expected) and len(shared) == 3
    for name, entry in expected.items():
        assert torch.equal(shared[name]["labels"], entry["labels"]), name
        assert torch.equal(shared[name]["features"], entry["features"]), name
    assert _config(leader)["classes"] == _config(one_process)["classes"]
    assert _same_rows(history(leader), history(one_process), abs=1e-6)
    assert _config(leader)["metrics"] == pytest.approx(_config(one_process)["metrics"], abs=1e-6)
    # The leader alone writes the model and the outputs; both hosts report success.
    for host in (leader, other):
        assert TrainingPaths(host).success_file.exists()
    assert not any((other / "model").iterdir())
    assert not (other / "checkpoints").exists()
    assert not (TrainingPaths(other).output_data_dir / "metrics.json").exists()
    assert not TrainingPaths(other).tensorboard_dir.exists()
    # The evaluation is written once, by the leader, and is one process's.
    leader_report, one_report = _evaluation(leader), _evaluation(one_process)
    assert leader_report["confusion_matrix"] == one_report["confusion_matrix"]
    assert leader_report["per_class"] == one_report["per_class"]  # ratios of equal counts
    for name in OUTPUT_FILES:
        assert (TrainingPaths(leader).output_data_dir / name).is_file(), name
        assert not (TrainingPaths(other).output_data_dir / name).exists(), name
    assert any(TrainingPaths(leader).tensorboard_dir.iterdir())


FINE_TUNING = {"train_layers": "layer4", "dropout": "0", "amp": "off"}


def test_two_workers_fine_tune_layer4_like_one_process(data: Path, tmp_path: Path) -> None:
    """DDP on one host, the same global batch: the same metrics to float tolerance.

    Dropout is off and fp32: each worker draws its own dropout masks, and bf16 rounds
    differently for half batches."""
    one = train_tiny(data, tmp_path / "one", **FINE_TUNING)
    assert one.returncode == 0, one.stderr[-3000:]
    two = train_tiny(data, tmp_path / "two", workers_per_host="2", **FINE_TUNING)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _same_rows(history(tmp_path / "two"), history(tmp_path / "one"), rel=1e-4)
    assert _config(tmp_path / "two")["metrics"] == pytest.approx(
        _config(tmp_path / "one")["metrics"], rel=1e-4
    )
    assert _config(tmp_path / "two")["architecture"]["trained"].startswith("layer4")
    # Every worker's share of the test pass reaches the leader's evaluation.
    one_report, two_report = _evaluation(tmp_path / "one"), _evaluation(tmp_path / "two")
    assert two_report["items"] == one_report["items"] == 20
    assert two_report["confusion_matrix"] == one_report["confusion_matrix"]
    assert two_report["calibration"]["ece"] == pytest.approx(
        one_report["calibration"]["ece"], abs=1e-4
    )


def _checkpoint_epoch(job_dir: Path) -> int:
    path = TrainingPaths(job_dir).checkpoint_dir / CHECKPOINT_FILE
    return int(torch.load(path, weights_only=True)["epoch"]) if path.exists() else 0


def _workers_of(process: psutil.Process) -> list[psutil.Process]:
    """The training workers torch's launcher spawned (not multiprocessing's helpers)."""
    return [
        child
        for child in process.children(recursive=True)
        if "spawn_main" in " ".join(child.cmdline())
    ]


def test_a_killed_worker_fails_every_host_in_bounded_time_and_a_rerun_resumes(
    data: Path, tmp_path: Path
) -> None:
    # The frozen stages run in every epoch (no cache), so an epoch lasts long enough.
    settings = {**FINE_TUNING, "feature_cache": "off", "epochs": "3"}
    hosts = start_tiny_hosts(data, tmp_path, 2, **settings)
    leader, other = tmp_path / "algo-1", tmp_path / "algo-2"
    try:
        deadline = time.monotonic() + 300
        while _checkpoint_epoch(leader) < 1:
            assert all(h.poll() is None for h in hosts), host_log(tmp_path)[-3000:]
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        (victim,) = _workers_of(psutil.Process(hosts[1].pid))
        victim.kill()
        killed = time.monotonic()
        codes = [host.wait(timeout=FAILURE_BOUND_S) for host in hosts]
        assert time.monotonic() - killed < FAILURE_BOUND_S
    finally:
        for host in hosts:
            if host.poll() is None:
                os.killpg(host.pid, signal.SIGKILL)
                host.wait()
    assert all(code != 0 for code in codes)
    done_before = torch.load(
        TrainingPaths(leader).checkpoint_dir / CHECKPOINT_FILE, weights_only=True
    )["history"]
    assert len(done_before) < 3
    # Each host's verdict is one line: the killed worker's host says how it died, the
    # leader that it lost its peer.
    for host, reason in (
        (other, "worker 1 on algo-2 stopped: Signal 9"),
        (leader, "worker 0 on algo-1 lost contact with another worker"),
    ):
        written = TrainingPaths(host).failure_file.read_text()
        assert reason in written
        assert "\n" not in written.strip()
    assert not TrainingPaths(leader).success_file.exists()

    assert train_tiny_hosts(data, tmp_path, hosts=2, **settings) == 0, host_log(tmp_path)[-3000:]
    rows = json.loads((TrainingPaths(leader).output_data_dir / "metrics.json").read_text())
    assert rows[: len(done_before)] == done_before  # resumed, not started over
    assert [row["epoch"] for row in rows] == [1, 2, 3]
