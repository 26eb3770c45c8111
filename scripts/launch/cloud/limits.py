"""SageMaker's hosting limits, declared once: the CLI checks against them before calling AWS.

The numbers are the platform's (SageMaker developer guide and API reference); the
serving image's own defaults live in `serving.contract`.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024  # SageMaker's "6 MB" is 6,291,456 bytes


@dataclass(frozen=True)
class RequestLimits:
    """What one request to an endpoint of a hosting mode may be."""

    payload_mb: int  # the largest request body
    timeout_s: int  # the longest one request may run


REAL_TIME = RequestLimits(payload_mb=6, timeout_s=60)
SERVERLESS = RequestLimits(payload_mb=4, timeout_s=60)
# Asynchronous requests travel through S3: up to 1 GB, and up to an hour each.
ASYNC = RequestLimits(payload_mb=1024, timeout_s=3600)
ASYNC_DEFAULT_TIMEOUT_S = 900  # InvokeEndpointAsync's InvocationTimeoutSeconds default

# Serverless endpoints: memory in 1 GB steps (it also sets the vCPUs), no GPU.
SERVERLESS_MEMORY_MB = tuple(range(1024, 6144 + 1, 1024))
SERVERLESS_MAX_CONCURRENCY = 200  # per endpoint

# Batch Transform: MaxPayloadInMB at most 100, and MaxConcurrentTransforms x
# MaxPayloadInMB at most 100; InvocationsTimeoutInSeconds 1-3600; retries 0-3.
TRANSFORM_MAX_PAYLOAD_MB = 100
TRANSFORM_PAYLOAD_BUDGET_MB = 100
TRANSFORM_MAX_TIMEOUT_S = 3600
TRANSFORM_MAX_RETRIES = 3

# Application Auto Scaling: a variant may scale to zero instances only on an
# asynchronous endpoint (a real-time variant needs at least one to answer).
REAL_TIME_MIN_INSTANCES = 1
