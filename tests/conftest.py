"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launch.synthetic_images import make_dataset
from support.aws_fixtures import aws  # noqa: F401 (a fixture of every test module)
from support.jobs import train_model
from support.targets import CONTAINER, PROCESS, Target, target_named

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
    """A model trained on `target` (the training image, for a server in the serving image);
    its data set (with a test channel) is in ../../data."""
    root = tmp_path_factory.mktemp("serve-train")
    return train_model(make_dataset(root / "data", per_class=6), root / "job", target)
