"""The hyperparameter search space, defined once for the SageMaker tuner and local tuning."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Objective:
    metric: str  # a MetricDefinitions name (trainer.metrics)
    direction: str  # "Maximize" or "Minimize", as SageMaker spells it


DEFAULT_OBJECTIVE = "valid_accuracy"
OBJECTIVES = {
    "valid_accuracy": Objective(metric_name("valid_accuracy"), "Maximize"),
    "valid_loss": Objective(metric_name("valid_loss"), "Minimize"),
    "valid_macro_f1": Objective(metric_name("valid_macro_f1"), "Maximize"),  # imbalanced classes
}
