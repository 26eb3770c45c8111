"""Hyperparameters: the job's one configuration mechanism.

Each field carries the rule its values must follow; the error message for a bad value is
generated from that same rule, so it names the parameter and exactly what is allowed
instead of a stack trace deep in PyTorch. A field's `trajectory` flag says whether the
value changes what the job learns (a checkpoint is only resumed by a run whose trajectory
settings are equal; see `trajectory_settings`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from trainer.contract import is_platform_key
from trainer.errors import ClientError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Between:
    """Numbers from `low` to `high` (None: no upper bound); open ends exclude the bound."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""

    def __call__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self, kind: type) -> str:
        noun = "an integer" if kind is int else "a number"
        if self.high is None:
            text = f"{noun} {'>' if self.low_open else '>='} {_number(self.low)}"
        else:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{noun} in {left}{_number(self.low)}, {_number(self.high)}{right}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class OneOf:
    values: tuple[str, ...]

    def __call__(self, value: str) -> bool:
        return value in self.values

    def describe(self, kind: type) -> str:
        return f"{', '.join(self.values[:-1])} or {self.values[-1]}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def hp(
    default: Any, rule: Between | OneOf | None = None, trajectory: bool = True, help: str = ""
) -> Any:
    """A hyperparameter field: its default, its rule, whether it shapes the trajectory, and
    what it means (the manual's table is generated from these: scripts/gen_docs.py)."""
    metadata = {"rule": rule, "trajectory": trajectory, "help": help}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


# The stages of the backbone that `train_layers` can train, from the last one back.
TRAIN_LAYERS = ("head", "layer4", "layer3", "all")


def default_num_workers() -> int:
    """min(8, CPUs)"""
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class Hyperparameters:
    lr: float = hp(
        1e-3,
        Between(0, 10, low_open=True),
        help="AdamW's learning rate for the head (trained backbone stages: see "
        "`backbone_lr_factor`)",
    )
    eps: float = hp(1e-8, Between(0, 1, low_open=True, high_open=True), help="AdamW's epsilon")
    weight_decay: float = hp(0.01, Between(0, 10, high_open=True), help="AdamW's weight decay")
    batch_size: int = hp(64, Between(1, 65536), help="images per training step")
    epochs: int = hp(
        5, Between(1, 10000), trajectory=False, help="passes over `train`; a longer rerun resumes"
    )
    hidden_units: int = hp(
        256, Between(1, 65536), help="head: 2048 -> hidden (ReLU, dropout) -> classes"
    )
    dropout: float = hp(
        0.2, Between(0, 1, high_open=True), help="dropout of the head's hidden layer"
    )
    image_size: int = hp(
        224, Between(32, 1024), help="centre crop after resizing the short side to size/0.875"
    )
    pretrained: bool = hp(
        True, help="ImageNet weights (IMAGENET1K_V2) from `TORCH_HOME`; the image bakes them in"
    )
    seed: int = hp(42, Between(0, 2**32 - 1), help="weights of the head, shuffling, dropout")
    num_workers: int = hp(
        default_num_workers, Between(0, 64), trajectory=False, help="decoding processes"
    )
    patience: int = hp(
        0,
        Between(0, note="0 turns early stopping off"),
        trajectory=False,
        help="early stopping on valid loss; the best epoch's head is exported either way",
    )
    feature_cache: str = hp(
        "auto",
        OneOf(("auto", "on", "off")),
        trajectory=False,
        help="`auto`/`on`: backbone features once per image; `off`: the textbook loop",
    )
    amp: str = hp(
        "auto",
        OneOf(("auto", "bf16", "fp16", "off")),
        help="bf16/fp16 autocast for the backbone where the hardware has it natively",
    )
    profile_steps: int = hp(
        0,
        Between(0, 1000, note="0 turns profiling off"),
        trajectory=False,
        help="N > 0: torch.profiler trace of the first N training steps in "
        "`output/data/profile/` (the leader's, whatever `train_layers` trains)",
    )
    # What trains: the head alone on frozen features, or the head and the last stages.
    train_layers: str = hp(
        "head",
        OneOf(TRAIN_LAYERS),
        help="what trains: `head` (frozen backbone), `layer4`, `layer3` (those stages and the "
        "ones after them, and the head) or `all`",
    )
    backbone_lr_factor: float = hp(
        0.1,
        Between(0, 1, low_open=True, note="times lr"),
        help="the trained backbone stages learn at `lr` times this (the head at `lr`)",
    )
    workers_per_host: int = hp(
        0,
        Between(0, 64, note="0: one per GPU, one on a CPU host"),
        trajectory=False,
        help="training processes per host",
    )
    # Bounds how long a worker waits for a peer that hangs, or for a host that never
    # starts; a peer that crashes is noticed within seconds whatever this is.
    dist_timeout: int = hp(
        300,
        Between(10, 86400, note="seconds"),
        trajectory=False,
        help="how long a worker waits for a peer that hangs, or for a host that never starts",
    )
    # The ONNX step at the end of the job; tuning trials turn it off (launch.search_space).
    onnx: bool = hp(
        True,
        trajectory=False,
        help="`model.onnx` and `model.int8.onnx` beside `model.pt` "
        "([ONNX graphs](#onnx-graphs-for-cpu-endpoints)); tuning trials get `false`",
    )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def trajectory_settings(hyperparameters: Hyperparameters) -> dict[str, Any]:
    """The values that change what the job learns (not how fast, long or verbosely)."""
    return {
        f.name: getattr(hyperparameters, f.name)
        for f in fields(hyperparameters)
        if f.metadata["trajectory"]
    }


_KINDS: dict[str, type] = {"float": float, "int": int, "bool": bool, "str": str}


def _decoded(raw: Any) -> Any:
    """A value as the training toolkit decodes it: JSON when it parses, else the raw string.

    The SDK's framework estimators JSON-encode every value (`"0.001"` and `"\\"auto\\""`
    arrive as `0.001` and `"auto"`); the generic Estimator sends `str(value)`.
    """
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _parse_value(raw: Any, kind: type) -> Any:
    text = str(_decoded(raw)).strip()
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


def _allowed(kind: type, rule: Between | OneOf | None) -> str:
    if rule is not None:
        return rule.describe(kind)
    return "true or false" if kind is bool else kind.__name__


def allowed_values(name: str) -> str:
    """What a hyperparameter accepts, as its error message says it (`an integer in [1, 64]`)."""
    known = {f.name: f for f in fields(Hyperparameters)}[name]
    return _allowed(_KINDS[str(known.type)], known.metadata["rule"])


def parse_hyperparameters(raw: Mapping[str, Any]) -> Hyperparameters:
    """Validate raw values into Hyperparameters, or raise a ClientError that names them."""
    known = {f.name: f for f in fields(Hyperparameters)}
    values: dict[str, Any] = {}
    for name, raw_value in raw.items():
        if is_platform_key(name):
            continue
        if name not in known:
            raise ClientError(f"unknown hyperparameter {name!r}; known: {', '.join(sorted(known))}")
        kind = _KINDS[str(known[name].type)]
        rule = known[name].metadata["rule"]
        try:
            value = _parse_value(raw_value, kind)
        except ValueError:
            raise ClientError(
                f"hyperparameter {name}={raw_value!r} is invalid: expected {_allowed(kind, rule)}"
            ) from None
        if rule is not None and not rule(value):
            raise ClientError(
                f"hyperparameter {name}={raw_value!r} is out of range: "
                f"expected {_allowed(kind, rule)}"
            )
        values[name] = value
    return Hyperparameters(**values)
