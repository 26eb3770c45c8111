"""model_config.json: written and read through one typed, versioned definition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_artifact.config import (
    CONFIG_FILE,
    FORMAT_VERSION,
    ArtifactError,
    Int8Agreement,
    ModelConfig,
    OnnxExport,
    OnnxInt8,
    read_config,
    write_config,
)
from model_artifact.preprocessing import Preprocessing
from model_artifact.torchscript import export_model, load_model
from support.tiny_models import TinyNet


def written(model_dir: Path, **overrides: object) -> Path:
    """A model directory whose config is the default one, with `overrides` in the JSON."""
    config = ModelConfig(classes=("cat", "dog"), preprocessing=Preprocessing.for_image_size(32))
    write_config(model_dir, config)
    (model_dir / config.model_file).write_bytes(b"not checked here")
    values = {**json.loads((model_dir / CONFIG_FILE).read_text()), **overrides}
    (model_dir / CONFIG_FILE).write_text(json.dumps(values))
    return model_dir


def test_round_trip(tmp_path: Path) -> None:
    config = ModelConfig(
        classes=("cat", "dog", "fox"),
        preprocessing=Preprocessing.for_image_size(96),
        architecture={"backbone": "resnet50"},
        hyperparameters={"lr": 0.01},
        metrics={"valid_accuracy": 0.9},
        versions={"torch": "2.14.1"},
        export_check_max_abs_diff=0.0,
    )
    write_config(tmp_path, config)
    (tmp_path / config.model_file).write_bytes(b"")
    assert read_config(tmp_path) == config
    document = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert document["format_version"] == FORMAT_VERSION
    assert document["input"]["shape"] == ["batch", 3, 96, 96]  # for readers without this code


def test_documents_of_older_releases_still_read(tmp_path: Path) -> None:
    """An artifact of the first release recorded the pixel limit in preprocessing."""
    preprocessing = {**Preprocessing.for_image_size(32).to_dict(), "max_pixels": 40_000_000}
    config = read_config(written(tmp_path, preprocessing=preprocessing))
    assert config.preprocessing == Preprocessing.for_image_size(32)


def test_a_newer_format_is_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=f"format_version {FORMAT_VERSION + 1} is newer"):
        read_config(written(tmp_path, format_version=FORMAT_VERSION + 1))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"format_version": "1"}, "format_version"),
        ({"format_version": None}, "format_version"),
        ({"model_file": "../model.pt"}, "model_file"),
        ({"model_file": "missing.pt"}, "missing"),
        ({"classes": []}, "classes"),
        ({"classes": ["cat", "cat"]}, "duplicates"),
        ({"classes": ["cat", 3]}, "classes"),
        ({"preprocessing": None}, "preprocessing"),
        ({"preprocessing": {"interpolation": "sharpest"}}, "interpolation"),
        ({"preprocessing": {"image_size": 300, "resize_size": 256}}, "image_size"),
    ],
)
def test_bad_configs_give_a_reason(
    tmp_path: Path, overrides: dict[str, object], reason: str
) -> None:
    with pytest.raises(ArtifactError, match=reason):
        read_config(written(tmp_path / "model", **overrides))


def test_missing_or_unreadable_artifacts_give_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        read_config(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match=r"model_config\.json is missing"):
        read_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{broken")
    with pytest.raises(ArtifactError, match="not readable JSON"):
        read_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="JSON object"):
        read_config(tmp_path)


def test_reading_a_config_does_not_import_torch() -> None:
    """`serve` checks the model directory before anything slow happens."""
    code = "import sys, model_artifact.config; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_export_then_load_gives_the_same_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = TinyNet().eval()
    config = ModelConfig(classes=("cat", "dog"), preprocessing=Preprocessing.for_image_size(32))
    exported = export_model(tmp_path, network, config)
    assert exported.export_check_max_abs_diff == 0.0
    assert {"python", "torch", "torchvision"} <= set(exported.versions)
    assert read_config(tmp_path) == exported
    loaded = load_model(tmp_path, exported)
    images = torch.randn(5, 3, 32, 32)  # another batch size than traced: it is dynamic
    with torch.no_grad():
        assert torch.equal(loaded(images), network(images))


def test_onnx_section_round_trips_and_is_checked(tmp_path: Path) -> None:
    agreement = Int8Agreement(images=8, top1=0.875, max_prob_diff=0.1, per_class_top1={"cat": 0.75})
    config = ModelConfig(
        classes=("cat", "dog"),
        preprocessing=Preprocessing.for_image_size(32),
        onnx=OnnxExport(check_max_abs_diff=1e-6, int8=OnnxInt8("model.int8.onnx", 4, agreement)),
    )
    write_config(tmp_path, config)
    (tmp_path / config.model_file).write_bytes(b"")
    assert read_config(tmp_path) == config
    assert config.onnx is not None and config.onnx.int8 is not None
    assert config.onnx.int8.agreement.worst_class_top1 == 0.75
    document = json.loads((tmp_path / CONFIG_FILE).read_text())
    document["onnx"]["int8"]["agreement"]["top1"] = 1.5
    (tmp_path / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="top1"):
        read_config(tmp_path)
    document["onnx"] = {"file": "../model.onnx"}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="file name"):
        read_config(tmp_path)
