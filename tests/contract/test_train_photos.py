"""The training job on real photos (random weights: a pipeline check, not an accuracy claim)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.jobs import train_tiny
from trainer.metrics import parse_metrics

pytestmark = [pytest.mark.contract, pytest.mark.photos]


def test_two_epochs_on_cats_and_dogs(photos_dir: Path, tmp_path: Path) -> None:
    completed = train_tiny(
        photos_dir, tmp_path / "job", epochs="2", image_size="96", batch_size="64", num_workers="2"
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    metrics = parse_metrics(completed.stdout)
    assert len(metrics["valid:accuracy"]) == 2
    assert len(metrics["test:accuracy"]) == 1
    config = json.loads((tmp_path / "job" / "model" / "model_config.json").read_text())
    assert config["classes"] == ["cat", "dog"]
    assert (tmp_path / "job" / "model" / config["model_file"]).stat().st_size > 50_000_000
