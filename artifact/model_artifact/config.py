"""`model_config.json`: what `model.pt` is and how to feed it, as one typed document.

The training job writes it and serving reads it, both through `ModelConfig`; no other
code knows the file names or the keys. Reading needs no torch, so `serve` checks a model
directory in milliseconds before it starts the model server.

`format_version` grows when a reader of the previous version would misread a new
document; a reader refuses versions newer than it knows, with a reason that says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_artifact.preprocessing import Preprocessing

FORMAT_VERSION = 1
CONFIG_FILE = "model_config.json"
MODEL_FILE = "model.pt"


class ArtifactError(Exception):
    """A model directory that can't be served; the message is the one-line reason."""


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
