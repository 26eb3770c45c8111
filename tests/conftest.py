"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.aws_emulator import emulator_env, moto_server

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


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh AWS API emulator; the environment points at it. Yields the endpoint URL."""
    with moto_server() as endpoint:
        for key, value in emulator_env(endpoint).items():
            monkeypatch.setenv(key, value)
        yield endpoint
