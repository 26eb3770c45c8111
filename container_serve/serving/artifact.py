"""The training job's artifact as the serving job reads it, without importing torch.

`serve` checks the artifact with this module before it starts the model server (a
missing or malformed `model_config.json` fails in milliseconds, with a reason), and
`model_fn` reads it again in each worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.errors import ModelLoadError

MODEL_CONFIG_FILE = "model_config.json"
SUPPORTED_FORMAT_VERSIONS = (1,)


@dataclass(frozen=True)
class ModelConfig:
    model_path: Path
    classes: tuple[str, ...]
    preprocessing: dict[str, Any]


def read_model_config(model_dir: Path) -> ModelConfig:
    """Parse and validate `model_config.json`; every problem raises ModelLoadError."""
    config_path = model_dir / MODEL_CONFIG_FILE
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    try:
        values = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{config_path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{config_path} is not readable JSON ({error})") from None
    if not isinstance(values, dict):
        raise ModelLoadError(f"{config_path} must hold a JSON object")
    version = values.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ModelLoadError(
            f"{config_path}: format_version {version!r} is not supported "
            f"(supported: {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
        )
    return ModelConfig(
        model_path=_model_path(model_dir, values.get("model_file")),
        classes=_classes(values.get("classes")),
        preprocessing=_preprocessing(values.get("preprocessing")),
    )


def _model_path(model_dir: Path, model_file: object) -> Path:
    # A bare file name: the config must not point the server outside its model directory.
    if not isinstance(model_file, str) or not model_file or Path(model_file).name != model_file:
        raise ModelLoadError(f"model_file must be a file name in {model_dir}, got {model_file!r}")
    path = model_dir / model_file
    if not path.is_file():
        raise ModelLoadError(f"model file {path} is missing")
    return path


def _classes(classes: object) -> tuple[str, ...]:
    if not isinstance(classes, list) or not classes:
        raise ModelLoadError("classes must be a non-empty list of class names")
    if not all(isinstance(name, str) and name for name in classes):
        raise ModelLoadError("every entry of classes must be a non-empty string")
    if len(set(classes)) != len(classes):
        raise ModelLoadError(f"classes has duplicates: {classes}")
    return tuple(classes)


def _preprocessing(preprocessing: object) -> dict[str, Any]:
    if not isinstance(preprocessing, dict):
        raise ModelLoadError("preprocessing must be a JSON object (Preprocessing.to_dict())")
    return preprocessing
