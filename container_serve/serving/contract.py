"""The SageMaker hosting contract: every environment name and path `serve` reads.

Values are read at call time from an injectable mapping (tests pass plain dicts),
never at import time: the sagemaker-inference toolkit reads SAGEMAKER_BASE_DIR when
`sagemaker_inference.environment` is imported, which is a trap for local runs. The
SAGEMAKER_* names are the toolkit's own (`sagemaker_inference.parameters`, constants
only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sagemaker_inference import parameters

from serving import content_types
from serving.errors import ServeConfigError

BASE_DIR_ENV = parameters.BASE_PATH_ENV
BIND_TO_PORT_ENV = parameters.BIND_TO_PORT_ENV
MODEL_SERVER_WORKERS_ENV = parameters.MODEL_SERVER_WORKERS_ENV
MODEL_SERVER_TIMEOUT_ENV = parameters.MODEL_SERVER_TIMEOUT_ENV
MODEL_SERVER_TIMEOUT_SECONDS_ENV = parameters.MODEL_SERVER_TIMEOUT_SECONDS_ENV
MAX_PAYLOAD_ENV = parameters.MAX_REQUEST_SIZE
DEFAULT_ACCEPT_ENV = parameters.DEFAULT_INVOCATIONS_ACCEPT_ENV
STARTUP_TIMEOUT_ENV = parameters.STARTUP_TIMEOUT_ENV
MODEL_SERVER_VMARGS_ENV = parameters.MODEL_SERVER_VMARGS

# Set by `serve` for the worker processes; not part of SageMaker's contract.
STATE_DIR_ENV = "SERVING_STATE_DIR"  # see serving/state.py
TORCH_THREADS_ENV = "OMP_NUM_THREADS"  # torch reads it; MMS workers default it to 1
JAVA_HOME_ENV = "JAVA_HOME"  # where multi-model-server finds java when it is not on PATH
# Linux limits unix socket paths (worker sockets, the management socket) to 107 bytes.
MAX_UNIX_SOCKET_PATH = 107

# SageMaker forwards InvokeEndpoint's CustomAttributes in this header (e.g. "top_k=3").
CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"

DEFAULT_BASE_DIR = "/opt/ml"
MODEL_SUBDIR = "model"
DEFAULT_PORT = 8080
MAX_PORT = 32767
DEFAULT_TIMEOUT_S = 60
# SageMaker's real-time payload limit is 6 MB; MMS's own default is 6,553,500 bytes.
DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_STARTUP_TIMEOUT_S = 600
DEFAULT_ACCEPT = content_types.JSON
# A worker holds torch plus one model copy; beyond 4 cores, more workers beat more threads.
CORES_PER_DEFAULT_WORKER = 4


@dataclass(frozen=True)
class ServeSettings:
    """Everything `serve` needs from the environment, validated once at start."""

    base_dir: Path
    port: int
    workers: int
    torch_threads: int
    response_timeout_s: int
    max_payload_bytes: int
    default_accept: str
    startup_timeout_s: int
    vmargs: str

    @property
    def model_dir(self) -> Path:
        return self.base_dir / MODEL_SUBDIR


def available_cores() -> int:
    """CPUs this process may run on (respects taskset/cpusets, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0))


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ServeConfigError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ServeConfigError(f"{name} must be a positive integer, got {raw!r}")
    return value


def default_workers(cores: int) -> int:
    """One worker per CORES_PER_DEFAULT_WORKER cores: a small instance gets one worker."""
    return max(1, cores // CORES_PER_DEFAULT_WORKER)


def read_settings(env: Mapping[str, str] | None = None, cores: int | None = None) -> ServeSettings:
    """Read and validate the serving environment; bad values raise ServeConfigError."""
    env = os.environ if env is None else env
    cores = available_cores() if cores is None else cores
    workers = _positive_int(env, MODEL_SERVER_WORKERS_ENV, default_workers(cores))
    # workers x torch threads <= cores, so concurrent requests don't oversubscribe the CPU.
    torch_threads = _positive_int(env, TORCH_THREADS_ENV, max(1, cores // workers))
    # SAGEMAKER_MODEL_SERVER_TIMEOUT is documented in seconds; pass it to MMS as seconds
    # (its `default_response_timeout` property is read as minutes).
    timeout_s = _positive_int(env, MODEL_SERVER_TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    timeout_s = _positive_int(env, MODEL_SERVER_TIMEOUT_SECONDS_ENV, timeout_s)
    return ServeSettings(
        base_dir=Path(env.get(BASE_DIR_ENV) or DEFAULT_BASE_DIR),
        port=_port(env),
        workers=workers,
        torch_threads=torch_threads,
        response_timeout_s=timeout_s,
        max_payload_bytes=_positive_int(env, MAX_PAYLOAD_ENV, DEFAULT_MAX_PAYLOAD_MB) * 1024 * 1024,
        default_accept=env.get(DEFAULT_ACCEPT_ENV) or DEFAULT_ACCEPT,
        startup_timeout_s=_positive_int(env, STARTUP_TIMEOUT_ENV, DEFAULT_STARTUP_TIMEOUT_S),
        vmargs=env.get(MODEL_SERVER_VMARGS_ENV, ""),
    )


def _port(env: Mapping[str, str]) -> int:
    port = _positive_int(env, BIND_TO_PORT_ENV, DEFAULT_PORT)
    # multi-model-server 1.1 rejects ports from 32767 up ("Invalid port number").
    if port >= MAX_PORT:
        raise ServeConfigError(f"{BIND_TO_PORT_ENV} must be below {MAX_PORT}, got {port}")
    return port


def default_accept(env: Mapping[str, str] | None = None) -> str:
    """The response type for requests without Accept (or with */*)."""
    env = os.environ if env is None else env
    return env.get(DEFAULT_ACCEPT_ENV) or DEFAULT_ACCEPT
