"""Fixtures of the launch CLI's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.aws_emulator import Emulator, emulator_env, recording_emulator


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Emulator]:
    """A fresh AWS API emulator recording every request; the environment points at it."""
    recording = tmp_path / "moto-recording.jsonl"
    monkeypatch.setenv("MOTO_RECORDER_FILEPATH", str(recording))  # read when moto starts
    with recording_emulator(recording) as emulator:
        for key, value in emulator_env(emulator.endpoint).items():
            monkeypatch.setenv(key, value)
        yield emulator
