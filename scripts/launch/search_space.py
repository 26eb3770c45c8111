"""The hyperparameter search space, defined once for the SageMaker tuner and local tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.metrics import metric_name


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    values: tuple[int, ...]


SEARCH_SPACE: dict[str, FloatRange | Choice] = {
    "lr": FloatRange(1e-5, 1e-1, log=True),
    "eps": FloatRange(1e-9, 1e-8),
    "weight_decay": FloatRange(1e-3, 1e-1),
    "batch_size": Choice((64, 128)),
}


# What every tuning trial gets unless the user sets it. A trial's model is rarely the one
# deployed, so it skips the ONNX export; the best hyperparameters leave these out, so that
# the job trained with them makes the ONNX graphs.
TRIAL_HYPERPARAMETERS = {"onnx": "false"}


def trial_hyperparameters(fixed: dict[str, str]) -> dict[str, str]:
    """The fixed hyperparameters of every trial: TRIAL_HYPERPARAMETERS under the user's."""
    return {**TRIAL_HYPERPARAMETERS, **fixed}


def without_trial_settings(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters as a training job should repeat them."""
    return {k: v for k, v in hyperparameters.items() if k not in TRIAL_HYPERPARAMETERS}


@dataclass(frozen=True)
class Objective:
    metric: str  # a MetricDefinitions name (trainer.metrics)
    direction: str  # "Maximize" or "Minimize", as SageMaker spells it


DEFAULT_OBJECTIVE = "valid_accuracy"
OBJECTIVES = {
    "valid_accuracy": Objective(metric_name("valid_accuracy"), "Maximize"),
    "valid_loss": Objective(metric_name("valid_loss"), "Minimize"),
}
