"""Command-line options both launch CLIs share."""

from __future__ import annotations

from collections.abc import Sequence


def hyperparameter_flags(pairs: Sequence[str]) -> dict[str, str]:
    """`--hp key=value` flags as a dict; values stay strings, as SageMaker passes them."""
    hyperparameters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--hp takes key=value, got {pair!r}")
        hyperparameters[key] = value
    return hyperparameters
