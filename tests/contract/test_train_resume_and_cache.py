"""Feature cache and checkpoints change how fast a job runs, never what it learns."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import local
import pytest
import torch
from synthetic_images import make_dataset
from training_jobs import TINY, run_training, train_command

from trainer import job
from trainer.contract import TrainingPaths
from trainer.engine import train_one_epoch
from trainer.errors import ClientError

pytestmark = pytest.mark.contract


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), per_class=16)


def _train_in_process(data: Path, job_dir: Path, **overrides: str) -> dict:
    local.layout_job_dir(job_dir, data, {**TINY, **overrides})
    job.run(TrainingPaths(job_dir))
    return torch.load(job_dir / "checkpoints" / "checkpoint.pt", weights_only=True)


def test_cached_features_train_the_same_head_as_the_textbook_loop(
    data: Path, tmp_path: Path
) -> None:
    cached = _train_in_process(data, tmp_path / "cached", feature_cache="on")
    textbook = _train_in_process(data, tmp_path / "textbook", feature_cache="off")
    for name, weight in cached["head"].items():
        assert torch.allclose(weight, textbook["head"][name], atol=1e-5), name
    for with_cache, without in zip(cached["history"], textbook["history"], strict=True):
        assert with_cache["train_loss"] == pytest.approx(without["train_loss"], abs=1e-5)
        assert with_cache["valid_accuracy"] == without["valid_accuracy"]


def _logits(job_dir: Path, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.jit.load(str(job_dir / "model" / "model.pt"))(images)


def test_trials_share_a_feature_cache_channel(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared_cache"
    shared.mkdir()
    for trial, lr in enumerate(("0.001", "0.01", "0.001")):
        local.layout_job_dir(tmp_path / f"trial{trial}", data, {**TINY, "lr": lr})
        (tmp_path / f"trial{trial}" / "input" / "data" / "feature_cache").symlink_to(shared)
    job.run(TrainingPaths(tmp_path / "trial0"))
    entries = sorted(path.name for path in shared.glob("*.pt"))
    assert [name.split("-")[0] for name in entries] == ["backbone", "test", "train", "valid"]
    stamps = {path: path.stat().st_mtime_ns for path in shared.glob("*.pt")}
    for trial in ("trial1", "trial2"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="trainer"):
            job.run(TrainingPaths(tmp_path / trial))
        assert "reusing the backbone" in caplog.text
        assert "computed" not in caplog.text
    assert {path: path.stat().st_mtime_ns for path in shared.glob("*.pt")} == stamps
    assert not (tmp_path / "trial1" / "output" / "data" / "feature_cache").exists()
    # Trial 2 repeats trial 0 from the cache alone (backbone included): the same model.
    images = torch.randn(4, 3, int(TINY["image_size"]), int(TINY["image_size"]))
    assert torch.equal(_logits(tmp_path / "trial0", images), _logits(tmp_path / "trial2", images))
    assert _without_timing(tmp_path / "trial2") == _without_timing(tmp_path / "trial0")


def _checkpoint_epoch(job_dir: Path) -> int:
    path = job_dir / "checkpoints" / "checkpoint.pt"
    return int(torch.load(path, weights_only=True)["epoch"]) if path.exists() else 0


def _without_timing(job_dir: Path) -> list[dict]:
    history = json.loads((job_dir / "output" / "data" / "metrics.json").read_text())
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_a_killed_job_resumes_and_ends_like_an_uninterrupted_one(
    data: Path, tmp_path: Path
) -> None:
    # The textbook loop makes each epoch take long enough to kill the job between two.
    settings = {**TINY, "epochs": "4", "feature_cache": "off", "image_size": "96"}
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        train_command(data, interrupted, settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while _checkpoint_epoch(interrupted) < 1:
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert _checkpoint_epoch(interrupted) < 4
    assert not (interrupted / "output" / "success").exists()

    resumed = run_training(data, interrupted, **settings)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout + resumed.stderr

    clean = tmp_path / "clean"
    assert run_training(data, clean, **settings).returncode == 0
    for resumed_row, clean_row in zip(
        _without_timing(interrupted), _without_timing(clean), strict=True
    ):
        assert resumed_row == pytest.approx(clean_row)
    resumed_config = json.loads((interrupted / "model" / "model_config.json").read_text())
    clean_config = json.loads((clean / "model" / "model_config.json").read_text())
    assert resumed_config["metrics"] == pytest.approx(clean_config["metrics"])


def test_profile_steps_write_a_trace(data: Path, tmp_path: Path) -> None:
    _train_in_process(data, tmp_path / "job", epochs="1", profile_steps="2")
    trace = tmp_path / "job" / "output" / "data" / "profile" / "trainer.pt.trace.json"
    assert "traceEvents" in json.loads(trace.read_text())


def test_nan_loss_stops_with_a_reason() -> None:
    head = torch.nn.Linear(4, 2)
    torch.nn.init.constant_(head.weight, float("inf"))
    batches = iter([(torch.ones(3, 4), torch.tensor([0, 1, 0]))])
    optimizer = torch.optim.AdamW(head.parameters())
    with pytest.raises(ClientError, match="training loss became nan at epoch 1, step 0"):
        train_one_epoch(head, batches, optimizer, torch.nn.CrossEntropyLoss(), epoch=1)
