"""The metric lines the job prints and the regexes that read them back.

SageMaker hyperparameter tuning and the training console read metrics from the
job's log with these regexes (MetricDefinitions), so the line format is a
contract: change the format and the regexes together, and tests prove they match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# A float as Python's format(value, ".4f") or repr prints it, including nan and inf.
_NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|nan|inf)"

# The keys the job prints (`split_quantity=value`); each is read back by one MetricDefinition.
METRIC_KEYS = (
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_accuracy",
    "test_loss",
    "test_accuracy",
)


def metric_name(key: str) -> str:
    """The MetricDefinitions name of a printed key (`valid_loss` -> `valid:loss`), as the
    tuner's objective and the training console name it."""
    if key not in METRIC_KEYS:
        raise ValueError(f"no metric {key!r}; the job prints {', '.join(METRIC_KEYS)}")
    split, _, quantity = key.partition("_")
    return f"{split}:{quantity}"


# Typed loosely: the SageMaker SDK wants dict[str, str | PipelineVariable].
METRIC_DEFINITIONS: list[dict[str, Any]] = [
    {"Name": metric_name(key), "Regex": rf"\b{key}={_NUMBER}"} for key in METRIC_KEYS
]


def format_metrics(values: Mapping[str, float], epoch: int | None = None) -> str:
    """One stable `key=value` line, e.g. `epoch=3 train_loss=0.2100 valid_accuracy=0.9400`."""
    fields = [] if epoch is None else [f"epoch={epoch}"]
    fields += [f"{key}={value:.4f}" for key, value in values.items()]
    return " ".join(fields)


def parse_metrics(log: str) -> dict[str, list[float]]:
    """Every value each MetricDefinition finds in a log, in order (as SageMaker reads them)."""
    return {
        definition["Name"]: [float(m) for m in re.findall(definition["Regex"], log)]
        for definition in METRIC_DEFINITIONS
    }
