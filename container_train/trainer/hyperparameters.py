"""Hyperparameters: the job's one configuration mechanism.

SageMaker passes every value as a string ("0.001", "True"); each field below says
how to parse it and what is allowed, so a bad value fails with a reason that
names the parameter instead of a stack trace deep in PyTorch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from trainer.errors import ClientError

# Keys the platform adds to every job; they are not ours to validate.
PLATFORM_PREFIXES = ("sagemaker_", "_tuning_objective_metric")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def default_num_workers() -> int:
    return min(8, os.cpu_count() or 1)


def _rule(check: Callable[[Any], bool], allowed: str) -> dict[str, Any]:
    return {"check": check, "allowed": allowed}


@dataclass(frozen=True)
class Hyperparameters:
    lr: float = field(default=1e-3, metadata=_rule(lambda v: 0 < v <= 10, "a number in (0, 10]"))
    eps: float = field(default=1e-8, metadata=_rule(lambda v: 0 < v < 1, "a number in (0, 1)"))
    weight_decay: float = field(
        default=0.01, metadata=_rule(lambda v: 0 <= v < 10, "a number in [0, 10)")
    )
    batch_size: int = field(
        default=64, metadata=_rule(lambda v: 1 <= v <= 65536, "an integer >= 1")
    )
    epochs: int = field(default=5, metadata=_rule(lambda v: 1 <= v <= 10000, "an integer >= 1"))
    hidden_units: int = field(
        default=256, metadata=_rule(lambda v: 1 <= v <= 65536, "an integer >= 1")
    )
    dropout: float = field(default=0.2, metadata=_rule(lambda v: 0 <= v < 1, "a number in [0, 1)"))
    image_size: int = field(
        default=224, metadata=_rule(lambda v: 32 <= v <= 1024, "an integer in [32, 1024]")
    )
    pretrained: bool = True
    seed: int = field(
        default=42, metadata=_rule(lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)")
    )
    num_workers: int = field(
        default_factory=default_num_workers,
        metadata=_rule(lambda v: 0 <= v <= 64, "an integer in [0, 64]"),
    )
    patience: int = field(
        default=0, metadata=_rule(lambda v: v >= 0, "an integer >= 0 (0 turns early stopping off)")
    )
    feature_cache: str = field(
        default="auto", metadata=_rule(lambda v: v in ("auto", "on", "off"), "auto, on or off")
    )
    amp: str = field(
        default="auto",
        metadata=_rule(lambda v: v in ("auto", "bf16", "fp16", "off"), "auto, bf16, fp16 or off"),
    )
    profile_steps: int = field(
        default=0,
        metadata=_rule(lambda v: 0 <= v <= 1000, "an integer in [0, 1000] (0 turns profiling off)"),
    )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _parse_value(raw: Any, kind: type) -> Any:
    text = str(raw).strip()
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError
    if kind is int:
        return int(text)
    if kind is float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError
        return value
    return text.lower()


_KINDS = {"float": float, "int": int, "bool": bool, "str": str}


def parse_hyperparameters(raw: Mapping[str, Any]) -> Hyperparameters:
    """Validate raw (string) values into Hyperparameters, or raise a ClientError that names them."""
    known = {f.name: f for f in fields(Hyperparameters)}
    values: dict[str, Any] = {}
    for name, raw_value in raw.items():
        if name.startswith(PLATFORM_PREFIXES):
            continue
        if name not in known:
            raise ClientError(f"unknown hyperparameter {name!r}; known: {', '.join(sorted(known))}")
        spec = known[name]
        kind = _KINDS[str(spec.type)]
        allowed = spec.metadata.get("allowed", "true or false" if kind is bool else str(spec.type))
        try:
            value = _parse_value(raw_value, kind)
        except ValueError:
            raise ClientError(
                f"hyperparameter {name}={raw_value!r} is invalid: expected {allowed}"
            ) from None
        check = spec.metadata.get("check")
        if check is not None and not check(value):
            raise ClientError(
                f"hyperparameter {name}={raw_value!r} is out of range: expected {allowed}"
            )
        values[name] = value
    return Hyperparameters(**values)
