"""The SageMaker training contract: every path and environment name the platform defines.

Read when called, never at import time, so a local run or a test can point
SAGEMAKER_BASE_DIR at any directory laid out like /opt/ml.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
DEBUG_CONFIG_ENV = "SMDEBUG_CONFIG_FILE_PATH"  # overrides <base>/input/config/debughookconfig.json
# What the training toolkit's `train` runs; the `train` command of this package sets it.
TRAINING_MODULE_ENV = "SAGEMAKER_TRAINING_MODULE"
TRAINING_MODULE = "trainer.job:main"

# Channels: ImageFolders of images, and an optional folder of precomputed features.
REQUIRED_CHANNELS = ("train", "valid")
OPTIONAL_CHANNELS = ("test",)
IMAGE_CHANNELS = REQUIRED_CHANNELS + OPTIONAL_CHANNELS
FEATURE_CACHE_CHANNEL = "feature_cache"

# Keys SageMaker and its SDK add to the hyperparameters; they are not the job's to read.
PLATFORM_HYPERPARAMETER_PREFIXES = ("sagemaker_", "_tuning_objective_metric")


def is_platform_key(key: str) -> bool:
    return key.startswith(PLATFORM_HYPERPARAMETER_PREFIXES)


@dataclass(frozen=True)
class TrainingPaths:
    base: Path

    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def debug_hook_config_file(self) -> Path:
        return self.config_dir / "debughookconfig.json"

    @property
    def input_data_dir(self) -> Path:
        return self.base / "input" / "data"

    def channel(self, name: str) -> Path:
        return self.input_data_dir / name

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def failure_file(self) -> Path:
        """Written by the training toolkit: the one-line reason SageMaker shows."""
        return self.output_dir / "failure"

    @property
    def success_file(self) -> Path:
        return self.output_dir / "success"

    @property
    def output_data_dir(self) -> Path:
        """Extra outputs (metrics, plots, profiles), uploaded by SageMaker as output.tar.gz."""
        return self.output_dir / "data"

    @property
    def checkpoint_dir(self) -> Path:
        """/opt/ml/checkpoints: synced to checkpoint_s3_uri, restored when a spot job restarts."""
        return self.base / "checkpoints"


def training_paths(environ: Mapping[str, str] = os.environ) -> TrainingPaths:
    return TrainingPaths(Path(environ.get(BASE_DIR_ENV, DEFAULT_BASE_DIR)))


def debug_hook_config_file(paths: TrainingPaths, environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(DEBUG_CONFIG_ENV, paths.debug_hook_config_file))


def read_hyperparameters(paths: TrainingPaths) -> dict[str, Any]:
    """The raw hyperparameters as SageMaker wrote them (values are usually strings)."""
    if not paths.hyperparameters_file.is_file():
        return {}
    return dict(json.loads(paths.hyperparameters_file.read_text()))
