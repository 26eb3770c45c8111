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

from model_artifact import platform

BASE_DIR_ENV = platform.BASE_DIR_ENV
DEFAULT_BASE_DIR = platform.DEFAULT_BASE_DIR
DEBUG_CONFIG_ENV = "SMDEBUG_CONFIG_FILE_PATH"  # overrides <base>/input/config/debughookconfig.json
# What the training toolkit's `train` runs; the `train` command of this package sets it.
TRAINING_MODULE_ENV = "SAGEMAKER_TRAINING_MODULE"
TRAINING_MODULE = "trainer.job:main"

# torch's rendezvous variables. A job reads them as overrides of the SageMaker contract
# (the first host of resourceconfig.json, DEFAULT_MASTER_PORT): a local multi-host run
# points the rendezvous at 127.0.0.1. torch's launcher then sets them for its workers.
MASTER_ADDR_ENV = "MASTER_ADDR"
MASTER_PORT_ENV = "MASTER_PORT"
DEFAULT_MASTER_PORT = 29500
# Set by torch's launcher in each worker process.
LOCAL_RANK_ENV = "LOCAL_RANK"
LOCAL_WORLD_SIZE_ENV = "LOCAL_WORLD_SIZE"
# The network interface the collectives use (resourceconfig's network_interface_name).
GLOO_SOCKET_IFNAME_ENV = "GLOO_SOCKET_IFNAME"
NCCL_SOCKET_IFNAME_ENV = "NCCL_SOCKET_IFNAME"

# Channels: ImageFolders of images, and an optional folder of precomputed features.
REQUIRED_CHANNELS = ("train", "valid")
OPTIONAL_CHANNELS = ("test",)
IMAGE_CHANNELS = REQUIRED_CHANNELS + OPTIONAL_CHANNELS
FEATURE_CACHE_CHANNEL = "feature_cache"

# inputdataconfig.json: how a channel reaches every host.
FULLY_REPLICATED = "FullyReplicated"

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
    def resource_config_file(self) -> Path:
        """The cluster: `hosts` (the first is the leader), `current_host`, the interface."""
        return self.config_dir / "resourceconfig.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

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
    def tensorboard_dir(self) -> Path:
        """TensorBoardOutputConfig's default LocalPath: SageMaker uploads it while the job runs."""
        return self.output_dir / "tensorboard"

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


@dataclass(frozen=True)
class ResourceConfig:
    hosts: tuple[str, ...]  # in SageMaker's order: hosts[0] is the leader, never re-sorted
    current_host: str
    network_interface: str

    @property
    def host_rank(self) -> int:
        return self.hosts.index(self.current_host)


SINGLE_HOST = ResourceConfig(("algo-1",), "algo-1", "lo")


def read_resource_config(paths: TrainingPaths) -> ResourceConfig:
    """The hosts of the job; one host when the file is missing (a bare local run)."""
    if not paths.resource_config_file.is_file():
        return SINGLE_HOST
    values = json.loads(paths.resource_config_file.read_text())
    return ResourceConfig(
        hosts=tuple(values["hosts"]),
        current_host=values["current_host"],
        network_interface=values.get("network_interface_name", "eth0"),
    )


def channel_distributions(paths: TrainingPaths) -> dict[str, str]:
    """Channel name -> S3DistributionType (FullyReplicated or ShardedByS3Key)."""
    if not paths.input_data_config_file.is_file():
        return {}
    values = json.loads(paths.input_data_config_file.read_text())
    return {
        name: str(channel.get("S3DistributionType", FULLY_REPLICATED))
        for name, channel in values.items()
    }


def rendezvous_address(
    resources: ResourceConfig, environ: Mapping[str, str] = os.environ
) -> tuple[str, int]:
    """Where the leader's launcher listens: the first host (loopback when it is the only
    one), unless MASTER_ADDR overrides it."""
    default = resources.hosts[0] if len(resources.hosts) > 1 else "127.0.0.1"
    host = environ.get(MASTER_ADDR_ENV) or default
    return host, int(environ.get(MASTER_PORT_ENV) or DEFAULT_MASTER_PORT)


def local_rank(environ: Mapping[str, str] = os.environ) -> int:
    return int(environ.get(LOCAL_RANK_ENV, "0"))


def local_world_size(environ: Mapping[str, str] = os.environ) -> int:
    return int(environ.get(LOCAL_WORLD_SIZE_ENV, "1"))


def collective_interface_environment(resources: ResourceConfig) -> dict[str, str]:
    """Between hosts, pin gloo and NCCL to the platform's interface (a user's own setting
    wins); on one host they need none."""
    if len(resources.hosts) == 1:
        return {}
    return {
        name: os.environ.get(name, resources.network_interface)
        for name in (GLOO_SOCKET_IFNAME_ENV, NCCL_SOCKET_IFNAME_ENV)
    }
