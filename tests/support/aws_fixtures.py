"""The `aws` fixture: a fresh AWS API emulator for one test.

Its own module, free of the training code's imports (torch), so that the launch tests can
run where only the launch tools are installed: `make test` runs them in .venv-sdk3 with
`-p support.aws_fixtures`, without tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.aws_emulator import emulator_env, moto_server


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh AWS API emulator; the environment points at it. Yields the endpoint URL."""
    with moto_server() as endpoint:
        for key, value in emulator_env(endpoint).items():
            monkeypatch.setenv(key, value)
        yield endpoint
