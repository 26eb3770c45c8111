"""The training job on real photos (random weights: a pipeline check, not an accuracy claim)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model_artifact.preprocessing import Preprocessing, eval_transform, open_rgb
from serving.contract import PRECISION_ENV
from support import servers
from support.jobs import train_tiny
from trainer.metrics import parse_metrics
from trainer.onnx_export import AGREEMENT_IMAGES

pytestmark = [pytest.mark.contract, pytest.mark.photos]


# Serving's default for SERVING_PRECISION=auto: int8 answers only at or above this agreement.
INT8_AGREEMENT_THRESHOLD = 0.995


def test_two_epochs_on_cats_and_dogs(photos_dir: Path, tmp_path: Path) -> None:
    completed = train_tiny(
        photos_dir,
        tmp_path / "job",
        epochs="2",
        image_size="96",
        batch_size="64",
        num_workers="2",
        onnx="on",
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    metrics = parse_metrics(completed.stdout)
    assert len(metrics["valid:accuracy"]) == 2
    assert len(metrics["test:accuracy"]) == 1
    config = json.loads((tmp_path / "job" / "model" / "model_config.json").read_text())
    assert config["classes"] == ["cat", "dog"]
    assert (tmp_path / "job" / "model" / config["model_file"]).stat().st_size > 50_000_000
    # The int8 graph, calibrated on train photos, answers as fp32 does on valid photos.
    onnx = config["onnx"]
    assert onnx["check_max_abs_diff"] < 1e-4
    agreement = onnx["int8"]["agreement"]
    assert agreement["images"] == AGREEMENT_IMAGES  # a bounded sample of the 154
    assert agreement["top1"] >= INT8_AGREEMENT_THRESHOLD
    assert min(agreement["per_class_top1"].values()) >= INT8_AGREEMENT_THRESHOLD
    assert agreement["max_prob_diff"] < 0.05


def test_layer4_fine_tuning_on_the_photos_is_served_unchanged(
    photos_dir: Path, tmp_path: Path
) -> None:
    """train_layers=layer4 exports the same kind of model.pt: `serve` classifies with it
    exactly what the artifact computes in process."""
    completed = train_tiny(
        photos_dir,
        tmp_path / "job",
        epochs="1",
        image_size="64",
        batch_size="64",
        num_workers="2",
        train_layers="layer4",
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    model_dir = tmp_path / "job" / "model"
    config = json.loads((model_dir / "model_config.json").read_text())
    assert config["architecture"]["trained"].startswith("layer4")
    assert config["export_check_max_abs_diff"] < 1e-4
    photo = next((photos_dir / "test" / "dog").glob("*.jpg"))
    transform = eval_transform(Preprocessing.from_dict(config["preprocessing"]))
    with torch.no_grad():
        logits = torch.jit.load(str(model_dir / "model.pt"))(transform(open_rgb(photo))[None])
    expected = torch.softmax(logits, 1)[0].tolist()

    # fp32, as computed in process above (`auto` serves in bf16 where the CPU has it).
    server = servers.start(model_dir, tmp_path / "serve", {PRECISION_ENV: "fp32"})
    try:
        server.wait_until_ready()
        status, body, _ = server.post(photo.read_bytes(), "image/jpeg")
    finally:
        assert servers.stop_and_clean(server) == []
    assert status == 200, body
    (prediction,) = json.loads(body)["predictions"]
    served = [prediction["probabilities"][name] for name in config["classes"]]
    assert served == pytest.approx(expected, abs=1e-4)
