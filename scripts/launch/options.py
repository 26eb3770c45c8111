"""Command-line options both launch CLIs share, checked before anything starts or is paid for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from trainer.errors import ClientError
from trainer.hyperparameters import parse_hyperparameters

# argparse's status for a command line it refuses; the CLIs use it for every usage error.
USAGE_ERROR_STATUS = 2


class UsageError(Exception):
    """A mistake on the command line: the CLIs print it as one line and exit with status 2."""


def hyperparameter_flags(pairs: Sequence[str]) -> dict[str, str]:
    """`--hp key=value` flags as a dict; values stay strings, as SageMaker passes them."""
    hyperparameters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--hp takes key=value, got {pair!r}")
        hyperparameters[key] = value
    return hyperparameters


def check_hyperparameters(hyperparameters: Mapping[str, str]) -> None:
    """Refuse what the training job would refuse, with the reason the job would give.

    The job's own rule (`trainer.hyperparameters`) runs on the values as the SDK sends
    them, strings: a bad value costs milliseconds here instead of an instance start.
    """
    try:
        parse_hyperparameters(hyperparameters)
    except ClientError as error:
        raise UsageError(str(error)) from None
