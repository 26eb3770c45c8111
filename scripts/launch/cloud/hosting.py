"""The hosting modes `deploy` can create, what each tells the serving container, and how
`invoke` and `cleanup` recognise an existing endpoint's mode.

One serving image serves every mode. The platform and the container must agree on
limits: the container is told the largest request body the mode lets through
(SAGEMAKER_MAX_PAYLOAD_IN_MB), and concurrency is sized from the workers the image starts
on an instance (`serving.contract.default_workers`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from sagemaker_inference.parameters import MULTI_MODEL_ENV

from launch.cloud import limits
from launch.cloud.settings import CloudError, error_code
from serving.contract import MAX_PAYLOAD_ENV, default_workers


class Mode(enum.StrEnum):
    REAL_TIME = "real-time"
    ASYNC = "asynchronous"
    SERVERLESS = "serverless"


REQUEST_LIMITS = {
    Mode.REAL_TIME: limits.REAL_TIME,
    Mode.ASYNC: limits.ASYNC,
    Mode.SERVERLESS: limits.SERVERLESS,
}

# The container holds a whole request in memory, so an asynchronous endpoint (1 GB via S3)
# lets the container take at most this much: more than any image the serving image
# accepts (40 million pixels), as much as Batch Transform allows.
CONTAINER_MAX_PAYLOAD_MB = limits.TRANSFORM_MAX_PAYLOAD_MB

# Requests in flight per serving worker: while a worker computes one, the next waits in the
# model server's queue, so the worker never idles while the platform fetches or uploads.
REQUESTS_PER_WORKER = 2

# Autoscaling: the fewest instances unless --min-instances says otherwise.
DEFAULT_MIN_INSTANCES = 1
# Serverless: room for torch, one model and the model server's JVM; the SDK's concurrency.
DEFAULT_SERVERLESS_MEMORY_MB = 3072
DEFAULT_SERVERLESS_CONCURRENCY = 5
# Asynchronous autoscaling: requests queued per instance before another one starts. A
# request is usually one image, classified in under a second: five wait seconds, not minutes.
DEFAULT_BACKLOG_TARGET = 5.0

# vCPUs from EC2's size names: "medium" and "large" have 2, "xlarge" 4, "Nxlarge" 4N.
_SIZE = re.compile(r"^ml\.[a-z0-9-]+\.(?:(medium|large)|(\d*)xlarge)$")


@dataclass(frozen=True)
class AsyncSettings:
    # Where SageMaker writes each result and each failure; None: `deploy` picks
    # s3://BUCKET/PREFIX/async/ENDPOINT/output and .../failure.
    output_uri: str | None = None
    failure_uri: str | None = None
    success_topic: str | None = None  # SNS topic ARNs notified per request
    error_topic: str | None = None
    max_concurrent_invocations: int | None = None  # per instance; None: sized from the image


@dataclass(frozen=True)
class ServerlessSettings:
    memory_mb: int
    max_concurrency: int


@dataclass(frozen=True)
class ScalingSettings:
    """Target tracking between min and max instances.

    `target` is invocations per instance per minute on a real-time endpoint, and queued
    requests per instance on an asynchronous one.
    """

    min_instances: int
    max_instances: int
    target: float | None = None  # required on a real-time endpoint

    @property
    def target_value(self) -> float:
        return DEFAULT_BACKLOG_TARGET if self.target is None else self.target


@dataclass(frozen=True)
class Hosting:
    """What `deploy` creates: real-time unless asynchronous or serverless settings are given;
    optionally multi-model and autoscaled."""

    multi_model: bool = False
    asynchronous: AsyncSettings | None = None
    serverless: ServerlessSettings | None = None
    scaling: ScalingSettings | None = None

    @property
    def mode(self) -> Mode:
        if self.asynchronous:
            return Mode.ASYNC
        return Mode.SERVERLESS if self.serverless else Mode.REAL_TIME

    @property
    def initial_instances(self) -> int:
        """At least one: an asynchronous endpoint scales to zero after it has started."""
        return max(1, self.scaling.min_instances) if self.scaling else 1


def instance_vcpus(instance_type: str) -> int | None:
    """vCPUs of an `ml.FAMILY.SIZE` instance type from its size name; None if unknown."""
    match = _SIZE.match(instance_type)
    if not match:
        return None
    if match.group(1):
        return 2
    return 4 * int(match.group(2) or 1)


def requests_per_instance(instance_type: str) -> int:
    """How many requests to keep in flight on one instance running the serving image.

    Sized for the CPU image (one worker per vCPU): the launch CLI cannot tell the variants
    apart, and on a GPU instance the gpu image starts one worker per GPU, so this errs high.
    """
    return REQUESTS_PER_WORKER * default_workers(instance_vcpus(instance_type) or 1)


def container_environment(mode: Mode, multi_model: bool = False) -> dict[str, str]:
    """The serving container's environment for a mode: the payload limit the platform has."""
    payload_mb = min(REQUEST_LIMITS[mode].payload_mb, CONTAINER_MAX_PAYLOAD_MB)
    environment = {MAX_PAYLOAD_ENV: str(payload_mb)}
    if multi_model:
        # SageMaker starts a MultiModel container without a model in /opt/ml/model; this
        # tells the serving image to answer the multi-model API instead of loading one.
        environment[MULTI_MODEL_ENV] = "true"
    return environment


# ------------------------------------------------------------------------------- validation


def check_serverless(settings: ServerlessSettings) -> None:
    if settings.memory_mb not in limits.SERVERLESS_MEMORY_MB:
        allowed = ", ".join(map(str, limits.SERVERLESS_MEMORY_MB))
        raise CloudError(f"--memory-mb must be one of {allowed}, got {settings.memory_mb}")
    if not 1 <= settings.max_concurrency <= limits.SERVERLESS_MAX_CONCURRENCY:
        raise CloudError(
            f"--max-concurrency must be 1 to {limits.SERVERLESS_MAX_CONCURRENCY}, "
            f"got {settings.max_concurrency}"
        )


def check_scaling(mode: Mode, scaling: ScalingSettings) -> None:
    lowest = 0 if mode is Mode.ASYNC else limits.REAL_TIME_MIN_INSTANCES
    if scaling.min_instances < lowest:
        raise CloudError(
            f"--min-instances must be at least {lowest}"
            + (
                ""
                if mode is Mode.ASYNC
                else " (only an asynchronous endpoint, --async, scales to zero)"
            )
        )
    if scaling.max_instances < max(1, scaling.min_instances):
        raise CloudError(
            f"--max-instances must be at least 1 and --min-instances ({scaling.min_instances})"
        )
    if scaling.target is None and mode is not Mode.ASYNC:
        raise CloudError(
            "autoscaling a real-time endpoint needs --target-invocations-per-instance N "
            "(invocations per instance per minute it serves comfortably)"
        )
    if scaling.target_value <= 0:
        raise CloudError(f"the scaling target must be positive, got {scaling.target}")


def check_hosting(hosting: Hosting) -> None:
    """Refuse combinations SageMaker does not offer, before any AWS call."""
    if hosting.asynchronous and hosting.serverless:
        raise CloudError("choose one of --async and --serverless")
    if hosting.serverless:
        if hosting.multi_model:
            raise CloudError("--multi-model needs instances: serverless endpoints host one model")
        if hosting.scaling:
            raise CloudError(
                "serverless endpoints scale by themselves: drop --min-instances/--max-instances"
            )
        check_serverless(hosting.serverless)
    if hosting.asynchronous:
        if hosting.multi_model:
            raise CloudError("--multi-model endpoints are real-time: drop --async")
        concurrent = hosting.asynchronous.max_concurrent_invocations
        if concurrent is not None and concurrent < 1:
            raise CloudError(f"--max-concurrent-invocations must be at least 1, got {concurrent}")
    if hosting.scaling:
        check_scaling(hosting.mode, hosting.scaling)


# ---------------------------------------------------------------------- an existing endpoint


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as SageMaker describes it: its mode, variants and models."""

    name: str
    config_name: str
    mode: Mode
    variants: tuple[str, ...]
    models: tuple[str, ...]
    asynchronous: dict[str, Any] | None = None  # the endpoint config's AsyncInferenceConfig


def mode_of(config: dict[str, Any]) -> Mode:
    if config.get("AsyncInferenceConfig"):
        return Mode.ASYNC
    if any(variant.get("ServerlessConfig") for variant in config["ProductionVariants"]):
        return Mode.SERVERLESS
    return Mode.REAL_TIME


def describe_endpoint(sagemaker_client: Any, name: str) -> Endpoint:
    try:
        config_name = sagemaker_client.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    except ClientError as error:
        if error_code(error) == "ValidationException":
            raise CloudError(f"endpoint {name} not found: {error}") from None
        raise
    config = sagemaker_client.describe_endpoint_config(EndpointConfigName=config_name)
    variants = config["ProductionVariants"]
    return Endpoint(
        name=name,
        config_name=config_name,
        mode=mode_of(config),
        variants=tuple(variant["VariantName"] for variant in variants),
        models=tuple(variant["ModelName"] for variant in variants),
        asynchronous=config.get("AsyncInferenceConfig"),
    )


def multi_model_prefix(sagemaker_client: Any, model: str) -> str | None:
    """The S3 prefix of a multi-model endpoint's archives; None for a single-model one."""
    container = sagemaker_client.describe_model(ModelName=model).get("PrimaryContainer", {})
    if container.get("Mode") != "MultiModel":
        return None
    return str(container["ModelDataUrl"])
