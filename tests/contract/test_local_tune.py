"""Local tuning: real training jobs, the SageMaker tuner's search space, one feature cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch.search_space import SEARCH_SPACE, Choice, FloatRange
from launch.synthetic_images import make_dataset
from model_artifact.config import MODEL_FILE, ONNX_FILE
from trainer.contract import FEATURE_CACHE_CHANNEL, TrainingPaths
from trainer.metrics import parse_metrics

pytestmark = pytest.mark.contract


def test_tune_runs_trials_and_reports_the_best(tmp_path: Path, repo_root: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "tune"
    fixed = ["--hp=pretrained=false", "--hp=image_size=64", "--hp=epochs=1", "--hp=num_workers=0"]
    completed = subprocess.run(
        [
            sys.executable,
            str(repo_root / "scripts" / "local.py"),
            "tune",
            "--data",
            str(data),
            "--job-dir",
            str(out),
            "--trials",
            "2",
            "--objective",
            "valid_loss",
            *fixed,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["objective"]["metric"] == "valid:loss"
    for name, domain in SEARCH_SPACE.items():
        value = best["hyperparameters"][name]
        if isinstance(domain, FloatRange):
            assert domain.low <= value <= domain.high
        elif isinstance(domain, Choice):
            assert value in domain.values
    losses = {}
    for trial_dir in sorted((out / "trials").iterdir()):
        losses[trial_dir.name] = parse_metrics((trial_dir / "train.log").read_text())["valid:loss"][
            -1
        ]
    assert best["objective"]["value"] == min(losses.values())
    assert len(losses) == 2
    # Both trials read and fill the study's one feature cache, not one of their own.
    assert any((out / "feature_cache").iterdir())
    for trial_dir in (out / "trials").iterdir():
        assert not (TrainingPaths(trial_dir).output_data_dir / FEATURE_CACHE_CHANNEL).exists()
    assert (out / "trials.png").read_bytes().startswith(b"\x89PNG")
    # Trials skip the ONNX graphs; the job trained with the best hyperparameters makes them.
    for trial_dir in (out / "trials").iterdir():
        model_dir = TrainingPaths(trial_dir).model_dir
        assert (model_dir / MODEL_FILE).is_file()
        assert not (model_dir / ONNX_FILE).exists()
    assert "onnx" not in best["hyperparameters"]
