"""Feature cache and checkpoints change how fast a job runs, never what it learns."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from launch.local.jobdir import attach_feature_cache, layout_job_dir
from launch.synthetic_images import make_dataset
from support.jobs import TINY, history, run_in_process, start_training, train_tiny
from support.targets import Target
from trainer import features
from trainer.checkpoint import CHECKPOINT_FILE
from trainer.contract import FEATURE_CACHE_CHANNEL, TrainingPaths
from trainer.engine import train_one_epoch
from trainer.errors import ClientError

pytestmark = pytest.mark.contract


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), per_class=16)


def _train_in_process(data: Path, job_dir: Path, **overrides: str) -> dict:
    layout_job_dir(job_dir, data, {**TINY, **overrides})
    run_in_process(job_dir)
    return torch.load(_checkpoint(job_dir), weights_only=True)


def test_cached_features_train_the_same_head_as_the_textbook_loop(
    data: Path, tmp_path: Path
) -> None:
    cached = _train_in_process(data, tmp_path / "cached", feature_cache="on")
    textbook = _train_in_process(data, tmp_path / "textbook", feature_cache="off")
    for name, weight in cached["weights"].items():
        assert torch.allclose(weight, textbook["weights"][name], atol=1e-5), name
    for with_cache, without in zip(cached["history"], textbook["history"], strict=True):
        assert with_cache["train_loss"] == pytest.approx(without["train_loss"], abs=1e-5)
        assert with_cache["valid_accuracy"] == without["valid_accuracy"]


def _logits(job_dir: Path, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.jit.load(str(job_dir / "model" / "model.pt"))(images)


def test_trials_share_a_feature_cache_channel(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared_cache"
    for trial, lr in enumerate(("0.001", "0.01", "0.001")):
        layout_job_dir(tmp_path / f"trial{trial}", data, {**TINY, "lr": lr})
        attach_feature_cache(tmp_path / f"trial{trial}", shared)
    run_in_process(tmp_path / "trial0")
    filled = {path: path.stat().st_mtime_ns for path in shared.iterdir()}
    assert filled

    def must_not_run(*args: object) -> None:
        raise AssertionError("a trial that finds the cache built a backbone or decoded images")

    # Later trials find every channel and the backbone cached: no backbone is built, no
    # image decoded, nothing written to the shared folder or to their own output.
    monkeypatch.setattr(features, "build_backbone", must_not_run)
    monkeypatch.setattr(features, "eval_transform", must_not_run)
    for trial in ("trial1", "trial2"):
        run_in_process(tmp_path / trial)
        own = TrainingPaths(tmp_path / trial).output_data_dir / FEATURE_CACHE_CHANNEL
        assert not own.exists()
    assert {path: path.stat().st_mtime_ns for path in shared.iterdir()} == filled
    # Trial 2 repeats trial 0 from the cache alone (backbone included): the same model.
    images = torch.randn(4, 3, int(TINY["image_size"]), int(TINY["image_size"]))
    assert torch.equal(_logits(tmp_path / "trial0", images), _logits(tmp_path / "trial2", images))
    assert history(tmp_path / "trial2") == history(tmp_path / "trial0")


def _checkpoint(job_dir: Path) -> Path:
    return TrainingPaths(job_dir).checkpoint_dir / CHECKPOINT_FILE


def _checkpoint_epoch(job_dir: Path) -> int:
    path = _checkpoint(job_dir)
    return int(torch.load(path, weights_only=True)["epoch"]) if path.exists() else 0


def test_a_killed_job_resumes_and_ends_like_an_uninterrupted_one(
    data: Path, tmp_path: Path, target: Target
) -> None:
    """A spot interruption: SIGKILL (`docker kill` in the image) after the first epoch's
    checkpoint, then the same job again with the same checkpoints folder."""
    # The textbook loop makes each epoch take long enough to kill the job between two.
    settings = {"epochs": "4", "feature_cache": "off", "image_size": "96"}
    interrupted = tmp_path / "interrupted"
    job = start_training(data, interrupted, target=target, **settings)
    try:
        deadline = time.monotonic() + 300
        while _checkpoint_epoch(interrupted) < 1:
            assert job.running() and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.01)
    finally:
        job.kill()
    checkpoint = torch.load(_checkpoint(interrupted), weights_only=True)
    assert checkpoint["epoch"] < 4
    assert not TrainingPaths(interrupted).success_file.exists()

    resumed = train_tiny(data, interrupted, target=target, **settings)
    assert resumed.returncode == 0, resumed.stderr
    # The epochs done before the kill come from the checkpoint, timings included: the rerun
    # resumed instead of starting over.
    done_before = checkpoint["history"]
    rows = json.loads((TrainingPaths(interrupted).output_data_dir / "metrics.json").read_text())
    assert rows[: len(done_before)] == done_before

    clean = tmp_path / "clean"
    assert train_tiny(data, clean, target=target, **settings).returncode == 0
    for resumed_row, clean_row in zip(history(interrupted), history(clean), strict=True):
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
