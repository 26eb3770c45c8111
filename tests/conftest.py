"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from launch.synthetic_images import make_dataset
from model_artifact.preprocessing import open_rgb
from serving.contract import ONNX, TORCH
from support.aws_fixtures import aws  # noqa: F401 (a fixture of every test module)
from support.jobs import train_model
from support.onnx_models import add_onnx
from support.targets import CONTAINER, PROCESS, ContainerTarget, ProcessTarget, Target, target_named

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS_ENV = "CATSDOGS_DIR"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """The real cats-and-dogs photos (train/valid/test), or skip where they are absent."""
    path = Path(os.environ.get(PHOTOS_ENV, REPO_ROOT.parent / "shared" / "data" / "catsdogs"))
    if not (path / "train").is_dir():
        pytest.skip(f"real photos not found at {path} (set {PHOTOS_ENV})")
    return path


@pytest.fixture(
    scope="session", params=[PROCESS, pytest.param(CONTAINER, marks=pytest.mark.images)]
)
def target(request: pytest.FixtureRequest) -> Target:
    """Where a contract test runs `train` and `serve`: a process of this venv, or the built
    image (`make test-images` selects these with `-m images`)."""
    return target_named(request.param)


@pytest.fixture(scope="session")
def trained_model_dir(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on `target` (the training image, for a server in the serving image;
    the process `train` where a serving image was built alone); its data set (with a test
    channel) is in ../../data."""
    root = tmp_path_factory.mktemp("serve-train")
    alone = isinstance(target, ContainerTarget) and target.train_image is None
    trainer = ProcessTarget() if alone else target
    return train_model(make_dataset(root / "data", per_class=6), root / "job", trainer)


@pytest.fixture(scope="session")
def onnx_model_dir(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of trained_model_dir with its ONNX graphs (fp32, and int8 calibrated on the
    train channel), as the training job writes them; serves on both backends."""
    model_dir = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(trained_model_dir, model_dir)
    data = trained_model_dir.parent.parent / "data"
    images = [open_rgb(path) for path in sorted((data / "train").glob("*/*.jpg"))]
    add_onnx(model_dir, images)
    return model_dir


@pytest.fixture(scope="module", params=[TORCH, ONNX])
def backend(request: pytest.FixtureRequest) -> str:
    """What `serve` computes with: TorchScript on torch, or ONNX Runtime."""
    return str(request.param)
