"""`model_config.json`: what `model.pt` is and how to feed it, as one typed document.

The training job writes it and serving reads it, both through `ModelConfig`; no other
code knows the file names or the keys. Reading needs no torch, so `serve` checks a model
directory in milliseconds before it starts the model server.

`format_version` grows when a reader of the previous version would misread a new
document; a reader refuses versions newer than it knows, with a reason that says so.
The optional `onnx` section needs no new version: a reader that ignores it still serves
`model.pt` correctly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model_artifact.preprocessing import Preprocessing

FORMAT_VERSION = 1
CONFIG_FILE = "model_config.json"
MODEL_FILE = "model.pt"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
# The ONNX graphs' tensor names: input (N, 3, S, S) float32 from the eval transform, output logits.
ONNX_INPUT = "images"
ONNX_OUTPUT = "logits"


class ArtifactError(Exception):
    """A model directory that can't be served; the message is the one-line reason."""


@dataclass(frozen=True)
class Int8Agreement:
    """How the int8 model's answers agree with the fp32 model's on held-out images."""

    images: int  # how many images were compared
    top1: float  # share of images with the same top-1 class
    max_prob_diff: float  # largest difference of any class probability
    per_class_top1: dict[str, float]  # top-1 agreement over the images of each true class

    @property
    def worst_class_top1(self) -> float:
        return min(self.per_class_top1.values(), default=self.top1)


@dataclass(frozen=True)
class OnnxInt8:
    file: str
    calibration_images: int
    agreement: Int8Agreement


@dataclass(frozen=True)
class OnnxExport:
    """The ONNX graphs beside `model.pt`: fp32 always, int8 when it was quantized."""

    file: str = ONNX_FILE
    check_max_abs_diff: float | None = None  # the fp32 graph against the network, on images
    int8: OnnxInt8 | None = None

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "file": self.file,
            "input": ONNX_INPUT,
            "output": ONNX_OUTPUT,
            "check_max_abs_diff": self.check_max_abs_diff,
        }
        if self.int8 is not None:
            values["int8"] = asdict(self.int8)
        return values


@dataclass(frozen=True)
class ModelConfig:
    classes: tuple[str, ...]  # in the order of the network's outputs
    preprocessing: Preprocessing
    architecture: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    export_check_max_abs_diff: float | None = None
    model_file: str = MODEL_FILE
    onnx: OnnxExport | None = None

    def to_dict(self) -> dict[str, Any]:
        size = self.preprocessing.image_size
        return {
            "format_version": FORMAT_VERSION,
            "model_file": self.model_file,
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            # For readers without this package: what the TorchScript file takes and gives.
            "input": {"dtype": "float32", "shape": ["batch", 3, size, size]},
            "output": "logits",
            "architecture": self.architecture,
            "hyperparameters": self.hyperparameters,
            "metrics": self.metrics,
            "export_check_max_abs_diff": self.export_check_max_abs_diff,
            "versions": self.versions,
            **({"onnx": self.onnx.to_dict()} if self.onnx is not None else {}),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Validate a parsed document; every problem raises ArtifactError."""
        _check_version(values.get("format_version"))
        return cls(
            classes=_classes(values.get("classes")),
            preprocessing=_preprocessing(values.get("preprocessing")),
            architecture=dict(values.get("architecture") or {}),
            hyperparameters=dict(values.get("hyperparameters") or {}),
            metrics=dict(values.get("metrics") or {}),
            versions=dict(values.get("versions") or {}),
            export_check_max_abs_diff=values.get("export_check_max_abs_diff"),
            model_file=_model_file(values.get("model_file")),
            onnx=_onnx(values.get("onnx")),
        )


def network_path(model_dir: Path, config: ModelConfig) -> Path:
    return model_dir / config.model_file


def write_config(model_dir: Path, config: ModelConfig) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))


def read_config(model_dir: Path) -> ModelConfig:
    """The model directory's config, checked against its files; problems raise ArtifactError."""
    config_path = model_dir / CONFIG_FILE
    if not model_dir.is_dir():
        raise ArtifactError(f"model directory {model_dir} does not exist")
    try:
        values = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{config_path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{config_path} is not readable JSON ({error})") from None
    if not isinstance(values, dict):
        raise ArtifactError(f"{config_path} must hold a JSON object")
    try:
        config = ModelConfig.from_dict(values)
    except ArtifactError as error:
        raise ArtifactError(f"{config_path}: {error}") from None
    if not network_path(model_dir, config).is_file():
        raise ArtifactError(f"model file {network_path(model_dir, config)} is missing")
    return config


def _check_version(version: object) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"format_version {version} is newer than this code reads ({FORMAT_VERSION}): "
            "serve it with the serving image of the release that trained it, or newer"
        )


def _model_file(model_file: object) -> str:
    # A bare file name: the config must not point the server outside its model directory.
    if not isinstance(model_file, str) or not model_file or Path(model_file).name != model_file:
        raise ArtifactError(f"model_file must be a file name, got {model_file!r}")
    return model_file


def _classes(classes: object) -> tuple[str, ...]:
    if not isinstance(classes, list) or not classes:
        raise ArtifactError("classes must be a non-empty list of class names")
    if not all(isinstance(name, str) and name for name in classes):
        raise ArtifactError("every entry of classes must be a non-empty string")
    if len(set(classes)) != len(classes):
        raise ArtifactError(f"classes has duplicates: {classes}")
    return tuple(classes)


def _preprocessing(values: object) -> Preprocessing:
    if not isinstance(values, dict):
        raise ArtifactError("preprocessing must be a JSON object")
    try:
        return Preprocessing.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ArtifactError(f"invalid preprocessing ({error})") from None


def _onnx(values: object) -> OnnxExport | None:
    if values is None:
        return None
    if not isinstance(values, dict):
        raise ArtifactError("onnx must be a JSON object")
    int8 = values.get("int8")
    return OnnxExport(
        file=_model_file(values.get("file")),
        check_max_abs_diff=_optional_number("onnx.check_max_abs_diff", values),
        int8=None if int8 is None else _onnx_int8(int8),
    )


def _onnx_int8(values: object) -> OnnxInt8:
    if not isinstance(values, dict) or not isinstance(values.get("agreement"), dict):
        raise ArtifactError("onnx.int8 must be a JSON object with an agreement object")
    agreement = values["agreement"]
    per_class = agreement.get("per_class_top1", {})
    if not isinstance(per_class, dict) or not all(
        isinstance(share, int | float) and not isinstance(share, bool)
        for share in per_class.values()
    ):
        raise ArtifactError("onnx.int8.agreement.per_class_top1 must map class names to shares")
    return OnnxInt8(
        file=_model_file(values.get("file")),
        calibration_images=_count("onnx.int8.calibration_images", values),
        agreement=Int8Agreement(
            images=_count("onnx.int8.agreement.images", agreement),
            top1=_share("onnx.int8.agreement.top1", agreement),
            max_prob_diff=_share("onnx.int8.agreement.max_prob_diff", agreement),
            per_class_top1={str(name): float(share) for name, share in per_class.items()},
        ),
    )


def _optional_number(name: str, values: dict[str, Any]) -> float | None:
    value = values.get(name.rsplit(".", 1)[-1])
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ArtifactError(f"{name} must be a number, got {value!r}")
    return float(value)


def _share(name: str, values: dict[str, Any]) -> float:
    value = _optional_number(name, values)
    if value is None or not 0.0 <= value <= 1.0:
        raise ArtifactError(f"{name} must be a number from 0 to 1, got {value!r}")
    return value


def _count(name: str, values: dict[str, Any]) -> int:
    value = values.get(name.rsplit(".", 1)[-1])
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ArtifactError(f"{name} must be a non-negative integer, got {value!r}")
    return value
