"""The ONNX graphs beside model.pt: the `onnx` hyperparameter turns them off, and the export
command adds them to a model directory trained without them (as a process, and in the
training image under `make test-images`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.synthetic_images import make_dataset
from model_artifact.config import CONFIG_FILE, MODEL_FILE, ONNX_FILE, ONNX_INT8_FILE
from support.jobs import train_tiny
from support.targets import Target

pytestmark = pytest.mark.contract


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), per_class=6)


@pytest.fixture(scope="module")
def model_dir(data: Path, target: Target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained with onnx=off."""
    job_dir = tmp_path_factory.mktemp("job")
    completed = train_tiny(data, job_dir, target=target, epochs="1", onnx="off")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return job_dir / "model"


def test_onnx_off_writes_no_graph(model_dir: Path) -> None:
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    assert (model_dir / MODEL_FILE).is_file()
    assert "onnx" not in config
    assert config["hyperparameters"]["onnx"] is False
    assert not (model_dir / ONNX_FILE).exists()
    assert not (model_dir / ONNX_INT8_FILE).exists()


def test_the_export_command_adds_the_graphs_to_a_model_trained_without_them(
    model_dir: Path, data: Path, target: Target
) -> None:
    before = json.loads((model_dir / CONFIG_FILE).read_text())

    completed = target.export_onnx(model_dir, data)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    after = json.loads((model_dir / CONFIG_FILE).read_text())
    assert {key: value for key, value in after.items() if key != "onnx"} == before
    onnx = after["onnx"]
    assert onnx["check_max_abs_diff"] < 1e-4
    assert (model_dir / onnx["file"]).stat().st_size > 50_000_000  # ResNet50 in fp32
    int8 = onnx["int8"]
    assert (model_dir / int8["file"]).is_file()
    assert int8["calibration_images"] == 12  # every train image: fewer than the bound
    assert int8["agreement"]["images"] == 12
    assert set(int8["agreement"]["per_class_top1"]) == {"cat", "dog"}
