"""The serving environment contract's checks (serving/contract.py); test_serve_settings.py
covers the rest of read_settings."""

from __future__ import annotations

import pytest

from serving import contract
from serving.errors import ServeConfigError

DEFAULT_ACCEPT = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "application/json"),
        ("application/json", "application/json"),
        (" Application/X-NPY ; q=1", "application/x-npy"),
    ],
)
def test_default_accept_is_normalised(value: str, expected: str) -> None:
    assert contract.read_settings({DEFAULT_ACCEPT: value}, cores=2).default_accept == expected
    assert contract.default_accept({DEFAULT_ACCEPT: value}) == expected


@pytest.mark.parametrize("value", ["text/csv", "*/*", "image/jpeg", "application/jsonl"])
def test_a_default_accept_no_encoder_writes_stops_serve_with_the_reason(value: str) -> None:
    with pytest.raises(ServeConfigError) as raised:
        contract.read_settings({DEFAULT_ACCEPT: value}, cores=2)
    assert str(raised.value) == (
        f"{DEFAULT_ACCEPT} must be one of application/json, application/x-npy, got {value!r}"
    )


def test_the_default_accept_is_read_when_asked_not_at_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DEFAULT_ACCEPT, "application/x-npy")
    assert contract.default_accept() == "application/x-npy"
    monkeypatch.setenv(DEFAULT_ACCEPT, "text/csv")
    with pytest.raises(ServeConfigError):
        contract.default_accept()


@pytest.mark.parametrize("value", ["²", "1²", "٣x", "-1", "1.5"])
def test_non_integer_batch_delays_are_config_errors_not_crashes(value: str) -> None:
    """str.isdigit() accepts superscripts that int() rejects with a ValueError."""
    with pytest.raises(ServeConfigError, match=contract.MAX_BATCH_DELAY_ENV):
        contract.read_settings({contract.MAX_BATCH_DELAY_ENV: value}, cores=2)


def test_batch_delay_accepts_zero_and_spaces() -> None:
    settings = contract.read_settings({contract.MAX_BATCH_DELAY_ENV: " 0 "}, cores=2)
    assert settings.max_batch_delay_ms == 0
