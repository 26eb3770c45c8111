"""The end-of-job evaluation of a real `train` job, checked against the exported model."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from launch.local import cli as local
from launch.synthetic_images import make_dataset
from model_artifact import torchscript
from model_artifact.config import read_config
from model_artifact.preprocessing import eval_transform, open_rgb
from support.jobs import TINY, train_tiny
from trainer.contract import TrainingPaths
from trainer.evaluation import (
    CONFUSION_MATRIX_PLOT,
    EVALUATION_FILE,
    MISTAKES_FILE,
    MISTAKES_PLOT,
    format_class_table,
)
from trainer.metrics import parse_metrics

pytestmark = pytest.mark.contract

CLASSES = ("cat", "dog", "fox")


def model_predictions(model_dir: Path, images: list[Path]) -> list[int]:
    """The exported model's top-1 class of each image, through its recorded preprocessing."""
    config = read_config(model_dir)
    transform = eval_transform(config.preprocessing)
    model = torchscript.load(model_dir / "model.pt")
    with torch.inference_mode():
        logits = model(torch.stack([transform(open_rgb(path)) for path in images]))
    return logits.argmax(1).tolist()


def _tuples(output: Path) -> list[tuple[str, str, str]]:
    with (output / MISTAKES_FILE).open() as handle:
        return [(row["file"], row["true"], row["predicted"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def three_class_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Three classes; the test channel has no fox. Run by `local.py train`, whose own
    lines (the job's go to the terminal) are returned too."""
    root = tmp_path_factory.mktemp("evaluation")
    data = make_dataset(root / "data", per_class=8, classes=CLASSES)
    shutil.rmtree(data / "test" / "fox")
    job_dir = root / "job"
    hyperparameters = [f"--hp={key}={value}" for key, value in TINY.items()]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = local.main(
            ["train", "--data", str(data), "--job-dir", str(job_dir), *hyperparameters]
        )
    assert code == 0
    return data, job_dir, printed.getvalue()


def test_the_report_matches_the_exported_models_errors_on_test(
    three_class_job: tuple[Path, Path, str],
) -> None:
    data, job_dir, _ = three_class_job
    output = TrainingPaths(job_dir).output_data_dir
    report = json.loads((output / EVALUATION_FILE).read_text())
    images = sorted((data / "test").glob("*/*.jpg"))
    predicted = model_predictions(job_dir / "model", images)
    truth = [CLASSES.index(path.parent.name) for path in images]
    counts = [[0] * 3 for _ in CLASSES]
    for true, guess in zip(truth, predicted, strict=True):
        counts[true][guess] += 1
    assert report["channel"] == "test"
    assert report["confusion_matrix"]["counts"] == counts
    # The class the test channel lacks is in the report, with nothing to recall.
    fox = report["per_class"][2]
    assert (fox["class"], fox["support"], fox["recall"]) == ("fox", 0, None)
    errors = {
        (path.relative_to(data / "test").as_posix(), CLASSES[true], CLASSES[guess])
        for path, true, guess in zip(images, truth, predicted, strict=True)
        if true != guess
    }
    assert set(_tuples(output)) == errors
    assert len(_tuples(output)) == len(errors) == report["mistakes"]
    for name in (CONFUSION_MATRIX_PLOT, MISTAKES_PLOT):
        with Image.open(output / name) as image:
            assert image.format == "PNG" and min(image.size) >= 200
    # The model's config records the metric lines' macro F1.
    metrics = read_config(job_dir / "model").metrics
    assert metrics["test_macro_f1"] == pytest.approx(report["macro_avg"]["f1"], abs=1e-6)


def test_local_train_prints_the_per_class_table(three_class_job: tuple[Path, Path, str]) -> None:
    _, job_dir, out = three_class_job
    output = TrainingPaths(job_dir).output_data_dir
    report = json.loads((output / EVALUATION_FILE).read_text())
    assert format_class_table(report) in out
    assert str(output / MISTAKES_PLOT) in out


def test_without_a_test_channel_the_best_epoch_is_evaluated_on_valid(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=6)
    shutil.rmtree(data / "test")
    completed = train_tiny(data, tmp_path / "job", epochs="3")
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = TrainingPaths(tmp_path / "job").output_data_dir
    report = json.loads((output / EVALUATION_FILE).read_text())
    assert report["channel"] == "valid"
    assert report["items"] == 12
    # The best epoch's valid_macro_f1 metric line is the report's macro F1.
    config = read_config(tmp_path / "job" / "model")
    lines = parse_metrics(completed.stdout)
    best = int(config.metrics["epoch"])
    assert lines["valid:macro_f1"][best - 1] == pytest.approx(report["macro_avg"]["f1"], abs=1e-4)
    assert lines["test:macro_f1"] == []
