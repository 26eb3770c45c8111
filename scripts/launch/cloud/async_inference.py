"""`invoke` on an asynchronous endpoint: each input goes to S3, each result is polled from S3.

Both paths of `invoke` run here too: the SDK's AsyncPredictor (which uploads the input
itself) and boto3's InvokeEndpointAsync on an input this module uploads. Every request is
submitted before any result is awaited, so the endpoint works through them together.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from launch.cloud import sdk, sdk2
from launch.cloud.predictor import JSON, Answer, ImageRequest, first_prediction
from launch.cloud.settings import AwsTarget, s3_object

POLL_S = 5  # between looks at S3; results take seconds to minutes
SHOWN_FAILURE_CHARS = 40
NOT_YET = None  # a check's answer while the result is not in S3 yet


@dataclass(frozen=True)
class Submitted:
    """One image's two requests: the SDK's response handle and boto3's result locations."""

    sdk: Any  # sagemaker.async_inference.AsyncInferenceResponse
    output_uri: str
    failure_uri: str | None


def upload_input(s3: Any, target: AwsTarget, endpoint: str, request: ImageRequest) -> str:
    """The input object InvokeEndpointAsync points at, under s3://BUCKET/PREFIX/async-inputs/."""
    key = f"{target.prefix}/async-inputs/{endpoint}/{uuid.uuid4().hex}-{request.path.name}"
    s3.put_object(
        Bucket=target.bucket, Key=key, Body=request.body, ContentType=request.content_type
    )
    return f"s3://{target.bucket}/{key}"


def failure(text: Any) -> str:
    shown = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"failed: {shown.strip()[:SHOWN_FAILURE_CHARS]}"


def boto3_result(s3: Any, submitted: Submitted) -> Answer | None:
    """The output's top class, the failure's text, or NOT_YET."""
    output = s3_object(s3, submitted.output_uri)
    if output is not None:
        return first_prediction(output)
    failed = s3_object(s3, submitted.failure_uri) if submitted.failure_uri else None
    return NOT_YET if failed is None else failure(failed)


def sdk_result(submitted: Submitted) -> Answer | None:
    """The same through the SDK's response handle (one look per call, no waiter threads)."""
    state, value = sdk.calls().async_result(submitted.sdk)
    if state == sdk2.PENDING:
        return NOT_YET
    return first_prediction(value) if state == sdk2.RESULT else failure(value)


def wait_for(check: Callable[[], Answer | None], deadline: float, timeout_s: int) -> Answer:
    while True:
        answer = check()
        if answer is not NOT_YET:
            return answer
        if time.monotonic() >= deadline:
            return f"no result after {timeout_s} s"
        time.sleep(POLL_S)


class AsyncInvoker:
    """Submits images to one asynchronous endpoint through the SDK and through boto3."""

    def __init__(self, target: AwsTarget, session: Any, endpoint: str, timeout_s: int) -> None:
        self.target = target
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.s3 = target.session.client("s3")
        self.runtime = target.session.client("sagemaker-runtime")
        self.predictor = sdk.calls().async_predictor(session, endpoint)

    def submit(self, request: ImageRequest) -> Submitted:
        arguments = {
            "ContentType": request.content_type,
            "InvocationTimeoutSeconds": self.timeout_s,
        }
        by_sdk = self.predictor.predict_async(data=request.body, initial_args=arguments)
        located = self.runtime.invoke_endpoint_async(
            EndpointName=self.endpoint,
            InputLocation=upload_input(self.s3, self.target, self.endpoint, request),
            Accept=JSON,
            **arguments,
        )
        return Submitted(by_sdk, located["OutputLocation"], located.get("FailureLocation"))

    def results(self, submitted: Submitted, deadline: float) -> tuple[Answer, Answer]:
        by_sdk = wait_for(partial(sdk_result, submitted), deadline, self.timeout_s)
        by_boto3 = wait_for(partial(boto3_result, self.s3, submitted), deadline, self.timeout_s)
        return by_sdk, by_boto3


def answers(
    target: AwsTarget, session: Any, endpoint: str, requests: list[ImageRequest], timeout_s: int
) -> Iterator[tuple[Answer, Answer]]:
    """Submit every image both ways, then yield (SDK answer, boto3 answer) in order."""
    invoker = AsyncInvoker(target, session, endpoint, timeout_s)
    submitted = [invoker.submit(request) for request in requests]
    deadline = time.monotonic() + timeout_s
    for each in submitted:
        yield invoker.results(each, deadline)
