"""The SageMaker hosting contract: every environment name and path `serve` reads.

Values are read at call time from an injectable mapping (tests pass plain dicts),
never at import time: the sagemaker-inference toolkit reads SAGEMAKER_BASE_DIR when
`sagemaker_inference.environment` is imported, which is a trap for local runs. The
SAGEMAKER_* names are the toolkit's own (`sagemaker_inference.parameters`, constants
only).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
from sagemaker_inference import parameters

from model_artifact import platform, precision
from serving import content_types
from serving.errors import ServeConfigError

BASE_DIR_ENV = platform.BASE_DIR_ENV  # the toolkit's parameters.BASE_PATH_ENV
BIND_TO_PORT_ENV = parameters.BIND_TO_PORT_ENV
MODEL_SERVER_WORKERS_ENV = parameters.MODEL_SERVER_WORKERS_ENV
MODEL_SERVER_TIMEOUT_ENV = parameters.MODEL_SERVER_TIMEOUT_ENV
MODEL_SERVER_TIMEOUT_SECONDS_ENV = parameters.MODEL_SERVER_TIMEOUT_SECONDS_ENV
MAX_PAYLOAD_ENV = parameters.MAX_REQUEST_SIZE
DEFAULT_ACCEPT_ENV = parameters.DEFAULT_INVOCATIONS_ACCEPT_ENV
STARTUP_TIMEOUT_ENV = parameters.STARTUP_TIMEOUT_ENV
MODEL_SERVER_VMARGS_ENV = parameters.MODEL_SERVER_VMARGS
MULTI_MODEL_ENV = parameters.MULTI_MODEL_ENV  # "true": SageMaker's multi-model endpoint

# This project's own settings (SAGEMAKER_* where they belong with the toolkit's).
BATCH_SIZE_ENV = "SAGEMAKER_MODEL_SERVER_BATCH_SIZE"  # requests per forward pass; 1 = off
MAX_BATCH_DELAY_ENV = "SAGEMAKER_MODEL_SERVER_MAX_BATCH_DELAY"  # ms a batch waits to fill
PRECISION_ENV = "SERVING_PRECISION"  # auto | fp32 | bf16 | fp16 (torch) | int8 (onnx)
BACKEND_ENV = "SERVING_BACKEND"  # auto | torch | onnx
# ONNX's `auto` serves int8 only when it agrees with fp32 at least this well (overall and
# in the worst class), as the training job measured it (model_config.json's onnx.int8).
INT8_MIN_AGREEMENT_ENV = "SERVING_INT8_MIN_AGREEMENT"
PRELOAD_ENV = "SERVING_PRELOAD"  # "false": workers import torch themselves (serving/preload.py)
MAX_MODELS_ENV = "SERVING_MAX_MODELS"  # multi-model: models loaded at once

# Set by `serve` for the worker processes; not part of SageMaker's contract.
STATE_DIR_ENV = "SERVING_STATE_DIR"  # see serving/state.py
PRELOAD_SOCKET_ENV = "SERVING_PRELOAD_SOCKET"  # see serving/preload.py
WORKER_ONLY_ENVS = (STATE_DIR_ENV, PRELOAD_SOCKET_ENV)  # no user sets these
# Threads per worker: torch reads it (MMS workers default it to 1); ONNX Runtime ignores
# it, so the onnx backend passes it to its session itself.
TORCH_THREADS_ENV = "OMP_NUM_THREADS"
JAVA_HOME_ENV = "JAVA_HOME"  # where multi-model-server finds java when it is not on PATH
# Which GPUs a process may use (CUDA's own variable); unset means every GPU of the host.
VISIBLE_GPUS_ENV = "CUDA_VISIBLE_DEVICES"
# One entry per NVIDIA GPU the driver knows (inside a container too): counted without
# importing torch, which would cost `serve` seconds before the server even starts.
NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")
# Linux limits unix socket paths (worker sockets, the management socket) to 107 bytes.
MAX_UNIX_SOCKET_PATH = 107

# SageMaker forwards InvokeEndpoint's CustomAttributes in this header (e.g. "top_k=3").
CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
# On every answer: how many requests the server batched into the forward pass that made it.
BATCH_SIZE_HEADER = "x-serving-batch-size"

DEFAULT_BASE_DIR = platform.DEFAULT_BASE_DIR
MODEL_SUBDIR = "model"
# Multi-model mode: SageMaker puts each model under <base>/models/<name>/model and
# registers it with its absolute path, so multi-model-server's model store is "/".
MULTI_MODEL_STORE = Path("/")
DEFAULT_PORT = 8080
MAX_PORT = 32767
DEFAULT_TIMEOUT_S = 60
# SageMaker's real-time payload limit is 6 MB; MMS's own default is 6,553,500 bytes.
DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_STARTUP_TIMEOUT_S = 600
DEFAULT_ACCEPT = content_types.JSON
# A worker holds torch plus one model copy; beyond 4 cores, more workers beat more threads.
CORES_PER_DEFAULT_WORKER = 4
# Batching defaults (docs/serving.md says why, docs/benchmarks.md shows the measurements):
# a forward pass over 8 images costs less per image than 8 passes over one; a lone request
# waits at most the delay for company. On a CPU, 5 ms gave the most images/s at 16 clients
# for a lone client's p50 within 1.1x; a GPU's forward pass is several times shorter, so
# its delay is too.
DEFAULT_BATCH_SIZE = 8
DEFAULT_GPU_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_DELAY_MS = 5
DEFAULT_GPU_MAX_BATCH_DELAY_MS = 2
DEFAULT_PRECISION = precision.AUTO
INT8 = "int8"  # ONNX Runtime's statically quantized graph (model_config.json's onnx.int8)
PRECISIONS = (*precision.CHOICES, INT8)
# The backends and the module each runs on; `auto` takes torch where both are installed
# (the GPU image, a development environment), ONNX Runtime where torch is not (the CPU image).
TORCH = "torch"
ONNX = "onnx"
BACKEND_RUNTIMES = {TORCH: "torch", ONNX: "onnxruntime"}
BACKENDS = (precision.AUTO, *BACKEND_RUNTIMES)
# What each backend can compute in (besides `auto`).
BACKEND_PRECISIONS = {TORCH: tuple(precision.TORCH_DTYPES), ONNX: ("fp32", INT8)}
DEFAULT_INT8_MIN_AGREEMENT = 0.995
DEFAULT_PRELOAD = True  # import the backend's runtime and the handler while the JVM starts
GIB = 1024**3


def _either(names: tuple[str, ...]) -> str:
    """`a`, `b` or `c`"""
    quoted = [f"`{name}`" for name in names]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


@dataclass(frozen=True)
class Setting:
    """Variables `serve` reads (one, or a few read together), as the manual's table shows
    them (scripts/gen_docs.py)."""

    names: tuple[str, ...]
    default: str
    meaning: str


SETTINGS = (
    Setting(
        (BIND_TO_PORT_ENV,),
        str(DEFAULT_PORT),
        f"must be below {MAX_PORT} (multi-model-server 1.1 rejects higher ports)",
    ),
    Setting((BASE_DIR_ENV,), f"`{DEFAULT_BASE_DIR}`", f"the model is `<base>/{MODEL_SUBDIR}`"),
    Setting(
        (MODEL_SERVER_WORKERS_ENV,),
        f"1 per GPU; on a CPU 1 per {CORES_PER_DEFAULT_WORKER} cores; 1 per model on a "
        "multi-model endpoint",
        "workers x threads <= cores",
    ),
    Setting(
        (TORCH_THREADS_ENV,),
        "cores / workers",
        "threads per worker: torch's, or the ONNX Runtime session's (`intra_op_num_threads`)",
    ),
    Setting(
        (BACKEND_ENV,),
        f"`{precision.AUTO}`",
        f"{_either(BACKENDS)}: see [Backends](#backends)",
    ),
    Setting(
        (BATCH_SIZE_ENV,),
        f"{DEFAULT_BATCH_SIZE} on a CPU, {DEFAULT_GPU_BATCH_SIZE} on a GPU",
        "requests per forward pass; `1` turns batching off",
    ),
    Setting(
        (MAX_BATCH_DELAY_ENV,),
        f"{DEFAULT_MAX_BATCH_DELAY_MS} on a CPU, {DEFAULT_GPU_MAX_BATCH_DELAY_MS} on a GPU",
        "milliseconds a batch waits for more requests before it leaves",
    ),
    Setting(
        (PRECISION_ENV,),
        f"`{DEFAULT_PRECISION}`",
        f"{_either(BACKEND_PRECISIONS[TORCH])} (torch), {_either(BACKEND_PRECISIONS[ONNX])} "
        "(onnx), or `auto`: see [Precision](#precision)",
    ),
    Setting(
        (INT8_MIN_AGREEMENT_ENV,),
        str(DEFAULT_INT8_MIN_AGREEMENT),
        "onnx, `auto`: int8 only when it agreed with fp32 at least this well (overall and "
        "in its worst class)",
    ),
    Setting(
        (MODEL_SERVER_TIMEOUT_ENV, MODEL_SERVER_TIMEOUT_SECONDS_ENV),
        str(DEFAULT_TIMEOUT_S),
        "seconds a request may take (passed as `default_response_timeout_seconds`: MMS "
        "reads the plain property as minutes); the second wins",
    ),
    Setting(
        (MAX_PAYLOAD_ENV,), str(DEFAULT_MAX_PAYLOAD_MB), "request and response size limit (MB)"
    ),
    Setting(
        (STARTUP_TIMEOUT_ENV,),
        str(DEFAULT_STARTUP_TIMEOUT_S),
        "seconds until the model must be ready",
    ),
    Setting(
        (DEFAULT_ACCEPT_ENV,),
        f"`{DEFAULT_ACCEPT}`",
        f"{_either(content_types.RESPONSE_TYPES)}; anything else stops `serve`",
    ),
    Setting((MULTI_MODEL_ENV,), "unset", "`true`: a multi-model endpoint (SageMaker sets it)"),
    Setting(
        (MAX_MODELS_ENV,),
        "1 per GiB of memory beyond the first",
        "multi-model: models held at once; one more answers 507",
    ),
    Setting(
        (PRELOAD_ENV,),
        f"`{str(DEFAULT_PRELOAD).lower()}`",
        "`false`: each worker imports torch or onnxruntime itself (see [Start-up](#start-up))",
    ),
    Setting(
        (MODEL_SERVER_VMARGS_ENV,),
        "`serve`'s start-up flags",
        "JVM options; when set they replace the start-up flags and the class archive",
    ),
    Setting((VISIBLE_GPUS_ENV,), "every GPU", "which GPUs the workers use"),
    Setting((JAVA_HOME_ENV,), "`java` on PATH", "where multi-model-server's JRE is"),
)


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
    batch_size: int = 1
    max_batch_delay_ms: int = DEFAULT_MAX_BATCH_DELAY_MS
    precision: str = DEFAULT_PRECISION
    gpus: int = 0
    multi_model: bool = False
    max_models: int = 1  # multi-model: loaded at once; one more answers 507
    preload: bool = DEFAULT_PRELOAD
    backend: str = TORCH  # resolved: torch or onnx
    int8_min_agreement: float = DEFAULT_INT8_MIN_AGREEMENT

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


def visible_gpus(env: Mapping[str, str] | None = None, driver_dir: Path = NVIDIA_GPUS_DIR) -> int:
    """How many GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else the driver's."""
    env = os.environ if env is None else env
    listed = env.get(VISIBLE_GPUS_ENV)
    if listed is None:
        return len(list(driver_dir.iterdir())) if driver_dir.is_dir() else 0
    entries = [entry.strip() for entry in listed.split(",") if entry.strip()]
    # CUDA ignores the entries from the first invalid one on; "-1" is the usual "none".
    return entries.index("-1") if "-1" in entries else len(entries)


def default_workers(cores: int, gpus: int = 0) -> int:
    """One worker per GPU; on a CPU one per CORES_PER_DEFAULT_WORKER cores (a small
    instance gets one worker)."""
    return gpus or max(1, cores // CORES_PER_DEFAULT_WORKER)


def read_settings(
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
    gpus: int | None = None,
    memory_bytes: int | None = None,
    installed: tuple[str, ...] | None = None,
) -> ServeSettings:
    """Read and validate the serving environment; bad values raise ServeConfigError.

    The machine's cores, GPUs, memory and installed backends are measured unless given
    (tests give them).
    """
    env = os.environ if env is None else env
    backend = serving_backend(env, installed)
    chosen_precision = _precision(env)
    _check_backend_precision(backend, chosen_precision)
    cores = available_cores() if cores is None else cores
    gpus = visible_gpus(env) if gpus is None else gpus
    multi_model = env.get(MULTI_MODEL_ENV, "").strip().lower() == "true"
    # Multi-model: one worker per model (an endpoint holds many models, each used rarely).
    workers = _positive_int(
        env, MODEL_SERVER_WORKERS_ENV, 1 if multi_model else default_workers(cores, gpus)
    )
    # workers x torch threads <= cores, so concurrent requests don't oversubscribe the CPU.
    torch_threads = _positive_int(env, TORCH_THREADS_ENV, max(1, cores // workers))
    return ServeSettings(
        base_dir=Path(env.get(BASE_DIR_ENV) or DEFAULT_BASE_DIR),
        port=_port(env),
        workers=workers,
        torch_threads=torch_threads,
        response_timeout_s=_timeout_s(env),
        max_payload_bytes=_positive_int(env, MAX_PAYLOAD_ENV, DEFAULT_MAX_PAYLOAD_MB) * 1024 * 1024,
        default_accept=default_accept(env),
        startup_timeout_s=_positive_int(env, STARTUP_TIMEOUT_ENV, DEFAULT_STARTUP_TIMEOUT_S),
        vmargs=env.get(MODEL_SERVER_VMARGS_ENV, ""),
        batch_size=_positive_int(
            env, BATCH_SIZE_ENV, DEFAULT_GPU_BATCH_SIZE if gpus else DEFAULT_BATCH_SIZE
        ),
        max_batch_delay_ms=_non_negative_int(
            env,
            MAX_BATCH_DELAY_ENV,
            DEFAULT_GPU_MAX_BATCH_DELAY_MS if gpus else DEFAULT_MAX_BATCH_DELAY_MS,
        ),
        precision=chosen_precision,
        gpus=gpus,
        multi_model=multi_model,
        max_models=_positive_int(env, MAX_MODELS_ENV, default_max_models(memory_bytes)),
        preload=_boolean(env, PRELOAD_ENV, default=DEFAULT_PRELOAD),
        backend=backend,
        int8_min_agreement=int8_min_agreement(env),
    )


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise ServeConfigError(f"{name} must be true or false, got {raw!r}")
    return raw == "true"


def _timeout_s(env: Mapping[str, str]) -> int:
    """SAGEMAKER_MODEL_SERVER_TIMEOUT is documented in seconds; pass it to MMS as seconds
    (its `default_response_timeout` property is read as minutes). _SECONDS wins."""
    timeout_s = _positive_int(env, MODEL_SERVER_TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    return _positive_int(env, MODEL_SERVER_TIMEOUT_SECONDS_ENV, timeout_s)


def default_max_models(memory_bytes: int | None = None) -> int:
    """Multi-model mode: one loaded model per GiB of memory beyond the first (a worker holds
    torch and its model: about 0.5 GiB for a ResNet50), at least one."""
    memory_bytes = psutil.virtual_memory().total if memory_bytes is None else memory_bytes
    return max(1, memory_bytes // GIB - 1)


def _non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    # isdigit alone accepts digits int() rejects ("²"), which would crash `serve`.
    if not (raw.isascii() and raw.strip().isdigit()):
        raise ServeConfigError(f"{name} must be an integer >= 0, got {raw!r}")
    return int(raw)


def _precision(env: Mapping[str, str]) -> str:
    """SERVING_PRECISION, checked against the names the backends know."""
    choice = (env.get(PRECISION_ENV) or DEFAULT_PRECISION).strip().lower()
    if choice not in PRECISIONS:
        raise ServeConfigError(
            f"{PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, got {choice!r}"
        )
    return choice


def _check_backend_precision(backend: str, choice: str) -> None:
    if choice != precision.AUTO and choice not in BACKEND_PRECISIONS[backend]:
        can = next(name for name, names in BACKEND_PRECISIONS.items() if choice in names)
        raise ServeConfigError(
            f"{PRECISION_ENV}={choice} needs the {can} backend, but this server runs "
            f"{backend} ({BACKEND_ENV}); {backend} serves {', '.join(BACKEND_PRECISIONS[backend])}"
        )


def installed_backends() -> tuple[str, ...]:
    """The backends whose runtime is installed here, found without importing it."""
    return tuple(
        name
        for name, module in BACKEND_RUNTIMES.items()
        if importlib.util.find_spec(module) is not None
    )


def serving_backend(
    env: Mapping[str, str] | None = None, installed: tuple[str, ...] | None = None
) -> str:
    """SERVING_BACKEND resolved to torch or onnx against what is installed."""
    env = os.environ if env is None else env
    installed = installed_backends() if installed is None else installed
    choice = (env.get(BACKEND_ENV) or precision.AUTO).strip().lower()
    if choice not in BACKENDS:
        raise ServeConfigError(
            f"{BACKEND_ENV} must be one of {', '.join(BACKENDS)}, got {choice!r}"
        )
    if choice == precision.AUTO:
        if not installed:
            raise ServeConfigError(
                f"neither {' nor '.join(BACKEND_RUNTIMES.values())} is installed: nothing can serve"
            )
        return installed[0]  # torch first: BACKEND_RUNTIMES' order
    if choice not in installed:
        raise ServeConfigError(
            f"{BACKEND_ENV}={choice} needs {BACKEND_RUNTIMES[choice]}, which is not installed "
            f"here (installed: {', '.join(installed) or 'no backend'})"
        )
    return choice


def int8_min_agreement(env: Mapping[str, str] | None = None) -> float:
    env = os.environ if env is None else env
    raw = (env.get(INT8_MIN_AGREEMENT_ENV) or "").strip()
    if not raw:
        return DEFAULT_INT8_MIN_AGREEMENT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise ServeConfigError(
            f"{INT8_MIN_AGREEMENT_ENV} must be a number from 0 to 1, got {raw!r}"
        )
    return value


def worker_threads(env: Mapping[str, str] | None = None) -> int:
    """The threads one worker computes with (`serve` sets them: cores / workers)."""
    env = os.environ if env is None else env
    return _positive_int(env, TORCH_THREADS_ENV, available_cores())


def serving_precision(env: Mapping[str, str] | None = None) -> str:
    """The precision a worker computes in, as the user chose it (read when a model loads)."""
    return _precision(os.environ if env is None else env)


def _port(env: Mapping[str, str]) -> int:
    port = _positive_int(env, BIND_TO_PORT_ENV, DEFAULT_PORT)
    # multi-model-server 1.1 rejects ports from 32767 up ("Invalid port number").
    if port >= MAX_PORT:
        raise ServeConfigError(f"{BIND_TO_PORT_ENV} must be below {MAX_PORT}, got {port}")
    return port


def default_accept(env: Mapping[str, str] | None = None) -> str:
    """The response type for requests without Accept (or with */*), normalised.

    Checked against what the encoders write: a type they can't write would let every
    request without Accept run the forward pass only to answer 406.
    """
    env = os.environ if env is None else env
    raw = env.get(DEFAULT_ACCEPT_ENV)
    chosen = content_types.media_type(raw) or DEFAULT_ACCEPT
    if chosen not in content_types.RESPONSE_TYPES:
        raise ServeConfigError(
            f"{DEFAULT_ACCEPT_ENV} must be one of {', '.join(content_types.RESPONSE_TYPES)}, "
            f"got {raw!r}"
        )
    return chosen
