"""`deploy`, `invoke` and `cleanup`: endpoints running the serving image in every hosting mode.

Real-time (optionally autoscaled or multi-model), asynchronous and serverless endpoints
are made the same way (a `Model` or `MultiDataModel` with the serving image) and differ in
their endpoint config; `invoke` and `cleanup` read the mode back from SageMaker.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError, WaiterError

from launch.cloud import async_inference, hosting, scaling, sdk
from launch.cloud.hosting import AsyncSettings, Endpoint, Hosting, Mode, ScalingSettings
from launch.cloud.limits import MB
from launch.cloud.predictor import Answer, Classification, ImageRequest, first_prediction
from launch.cloud.settings import (
    LOCAL_INSTANCE_TYPES,
    AwsTarget,
    CloudError,
    ensure_bucket,
    s3_objects,
    unique_name,
)
from serving import content_types

JSON = content_types.JSON
PAYLOADS = ("image", "json")  # raw image bytes, or the serving image's {"instances": [{"b64"}]}
ENDPOINT_BASE = "imgcls"
DEFAULT_INSTANCE = "ml.t2.medium"  # for the CPU serving image
ARCHIVE_SUFFIX = ".tar.gz"  # a model archive, as training jobs write model.tar.gz


# -------------------------------------------------------------------------------------- deploy


def model_data_of(sagemaker_client: Any, job: str) -> str:
    try:
        described = sagemaker_client.describe_training_job(TrainingJobName=job)
    except ClientError as error:
        raise CloudError(f"training job {job} not found: {error}") from None
    if described["TrainingJobStatus"] != "Completed":
        raise CloudError(f"training job {job} is {described['TrainingJobStatus']}, not Completed")
    return str(described["ModelArtifacts"]["S3ModelArtifacts"])


def default_endpoint_name() -> str:
    return unique_name(ENDPOINT_BASE)


def model_archives(s3: Any, prefix: str) -> list[str]:
    """The model archives under a multi-model prefix, as names relative to it."""
    return sorted(name for name in s3_objects(s3, prefix) if name.endswith(ARCHIVE_SUFFIX))


def with_async_defaults(settings: AsyncSettings, target: AwsTarget, endpoint: str) -> AsyncSettings:
    """Results and failures under s3://BUCKET/PREFIX/async/ENDPOINT/ unless given."""
    return dataclasses.replace(
        settings,
        output_uri=settings.output_uri or target.s3_uri("async", endpoint, "output"),
        failure_uri=settings.failure_uri or target.s3_uri("async", endpoint, "failure"),
    )


def where(plan: Hosting, instance_type: str | None) -> str:
    """How `deploy` describes the endpoint it makes, e.g. `on ml.m5.xlarge (asynchronous)`."""
    if plan.serverless:
        memory, concurrency = plan.serverless.memory_mb, plan.serverless.max_concurrency
        return f"serverless ({memory} MB, {concurrency} concurrent requests)"
    kinds = [str(plan.mode)] if plan.asynchronous else []
    kinds += ["multi-model"] if plan.multi_model else []
    count = f"{plan.initial_instances} x " if plan.initial_instances > 1 else ""
    return f"on {count}{instance_type}" + (f" ({', '.join(kinds)})" if kinds else "")


def deploy(
    session: Any,
    image_uri: str,
    role: str,
    model_data: str,
    endpoint_name: str,
    instance_type: str | None,
    wait: bool,
    plan: Hosting,
) -> None:
    """Create model, endpoint config and endpoint; wait for InService; autoscale if asked.

    `model_data` is the model.tar.gz, or for a multi-model endpoint the prefix holding the
    archives.
    """
    local = instance_type in LOCAL_INSTANCE_TYPES  # local mode starts the container in-line
    if local and (plan.mode is not Mode.REAL_TIME or plan.multi_model or plan.scaling):
        raise CloudError("--local deploys a real-time endpoint with one model and no autoscaling")
    if plan.scaling and not wait:
        raise CloudError("autoscaling is set up once the endpoint is InService: drop --no-wait")
    # Listed before anything is created: a wrong prefix fails here, not after deploying.
    s3 = session.boto_session.client("s3")
    archives = model_archives(s3, model_data) if plan.multi_model else []
    print(f"deploying {model_data}\n  to endpoint {endpoint_name} {where(plan, instance_type)}")
    if plan.asynchronous:
        print(f"  results to {plan.asynchronous.output_uri}")
    if plan.multi_model:
        print(f"  models: {listed(archives) or 'none yet'}")
    sdk.calls().deploy_model(
        session, image_uri, role, model_data, endpoint_name, instance_type, plan
    )
    if local:
        status = "InService (local mode)"
    else:
        status = wait_in_service(session.sagemaker_client, endpoint_name) if wait else "Creating"
    print(f"endpoint {endpoint_name}: {status}")
    if plan.scaling:
        autoscale(session, endpoint_name, plan.scaling, queued=plan.asynchronous is not None)
    print_next_steps(endpoint_name, archives if plan.multi_model else None)


def autoscale(session: Any, endpoint: str, settings: ScalingSettings, queued: bool) -> None:
    for variant in hosting.describe_endpoint(session.sagemaker_client, endpoint).variants:
        scaling.autoscale(session.boto_session, endpoint, variant, settings, queued)
    print(scaling.describe(settings, queued))


def print_next_steps(endpoint: str, archives: list[str] | None) -> None:
    """The invoke and cleanup commands; `archives`: a multi-model endpoint's models."""
    target_model = ""
    if archives is not None:
        target_model = f" --target-model {archives[0] if archives else 'MODEL' + ARCHIVE_SUFFIX}"
    print(f"invoke:   python scripts/cloud.py invoke --endpoint {endpoint}{target_model} IMAGES...")
    print(f"clean up: python scripts/cloud.py cleanup --endpoint {endpoint}")


def wait_in_service(sagemaker_client: Any, endpoint: str, poll_s: int = 30) -> str:
    """Wait until the endpoint is InService (usually minutes); a failure becomes a CloudError.

    boto3's waiter asks before its first pause (the SDK's own wait sleeps first).
    """
    waiter = sagemaker_client.get_waiter("endpoint_in_service")
    try:
        waiter.wait(EndpointName=endpoint, WaiterConfig={"Delay": poll_s, "MaxAttempts": 120})
    except WaiterError:
        described = sagemaker_client.describe_endpoint(EndpointName=endpoint)
        reason = described.get("FailureReason", "no reason given")
        status = described["EndpointStatus"]
        raise CloudError(f"endpoint {endpoint} is {status}: {reason}") from None
    return "InService"


# -------------------------------------------------------------------------------------- invoke


def image_paths(paths: list[Path]) -> list[Path]:
    """The images among the arguments: files as given, folders searched recursively."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.suffix.lower() in content_types.IMAGE_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise CloudError(f"{path} does not exist")
    if not found:
        raise CloudError(f"no .jpg, .jpeg or .png images in {' '.join(map(str, paths))}")
    return found


def request_body(path: Path, payload: str) -> tuple[bytes, str]:
    """The request body and its content type: the image's bytes, or them base64 in JSON."""
    image = path.read_bytes()
    if payload == "json":
        instances = [{"b64": base64.b64encode(image).decode("ascii")}]
        return json.dumps({"instances": instances}).encode(), JSON
    return image, content_types.of_file(path.name)


def image_requests(paths: list[Path], payload: str, mode: Mode) -> list[ImageRequest]:
    """Every request body, each checked against the mode's payload limit before any is sent."""
    limit_mb = hosting.REQUEST_LIMITS[mode].payload_mb
    requests = [ImageRequest(path, *request_body(path, payload)) for path in paths]
    for request in requests:
        if len(request.body) > limit_mb * MB:
            larger = " (deploy --async for large images)" if mode is not Mode.ASYNC else ""
            raise CloudError(
                f"{request.path}: the request is {len(request.body) / MB:.1f} MB, over the "
                f"{limit_mb} MB a {mode} endpoint accepts{larger}"
            )
    return requests


def listed(names: list[str], at_most: int = 5) -> str:
    """Names for a one-line message: a multi-model prefix may hold hundreds."""
    more = f", and {len(names) - at_most} more" if len(names) > at_most else ""
    return ", ".join(names[:at_most]) + more


def check_target_model(
    s3: Any, sagemaker_client: Any, endpoint: Endpoint, target_model: str | None
) -> None:
    """A multi-model endpoint needs --target-model naming one of its archives; others none."""
    prefix = hosting.multi_model_prefix(sagemaker_client, endpoint.models[0])
    if prefix is None:
        if target_model:
            raise CloudError(f"endpoint {endpoint.name} hosts one model: drop --target-model")
        return
    archives = model_archives(s3, prefix)
    if target_model in archives:
        return
    known = listed(archives) if archives else f"none yet under {prefix}"
    if not target_model:
        raise CloudError(
            f"endpoint {endpoint.name} is multi-model: pass --target-model NAME ({known})"
        )
    raise CloudError(f"no model archive {target_model} under {prefix} ({known})")


def runtime_classify(
    runtime: Any, endpoint: str, body: bytes, content_type: str, target_model: str | None = None
) -> Any:
    """The same request without the SDK: boto3's sagemaker-runtime InvokeEndpoint."""
    extra = {"TargetModel": target_model} if target_model else {}
    response = runtime.invoke_endpoint(
        EndpointName=endpoint, ContentType=content_type, Accept=JSON, Body=body, **extra
    )
    return response["Body"].read()


def real_time_answers(
    target: AwsTarget,
    session: Any,
    endpoint: str,
    requests: list[ImageRequest],
    target_model: str | None,
) -> Iterator[tuple[Answer, Answer]]:
    """Each image through the Predictor and through boto3, as the answers come."""
    predictor = sdk.calls().predictor(session, endpoint)
    runtime = target.session.client("sagemaker-runtime")
    for request in requests:
        body, content_type = request.body, request.content_type
        by_sdk = predictor.classify(body, content_type, target_model)
        by_boto3 = runtime_classify(runtime, endpoint, body, content_type, target_model)
        yield first_prediction(by_sdk), first_prediction(by_boto3)


def print_table(
    paths: list[Path], boto3_call: str, answers: Iterable[tuple[Answer, Answer]]
) -> int:
    """One row per image: the SDK's answer and boto3's. Returns how many are missing or differ."""
    width = max(len(str(path)) for path in paths)
    print(f"{'image':{width}}  {'Predictor':24}  {boto3_call:24}", flush=True)
    problems = 0
    for path, (by_sdk, by_boto3) in zip(paths, answers, strict=True):
        problems += not (isinstance(by_sdk, Classification) and by_sdk == by_boto3)
        print(f"{path!s:{width}}  {by_sdk!s:24}  {by_boto3!s:24}", flush=True)
    return problems


def invoke(
    target: AwsTarget,
    session: Any,
    endpoint: str,
    paths: list[Path],
    payload: str,
    target_model: str | None,
    async_timeout_s: int,
) -> int:
    """Classify each image through the Predictor and through boto3; print a table.

    An asynchronous endpoint gets its inputs through S3 and is polled for the results.
    Returns the number of images whose two answers are missing or disagree.
    """
    images = image_paths(paths)
    described = hosting.describe_endpoint(session.sagemaker_client, endpoint)
    s3 = target.session.client("s3")
    check_target_model(s3, session.sagemaker_client, described, target_model)
    requests = image_requests(images, payload, described.mode)
    if described.mode is Mode.ASYNC:
        ensure_bucket(target)  # the inputs go there, as the SDK's go to its default bucket
        answers = async_inference.answers(target, session, endpoint, requests, async_timeout_s)
        return print_table(images, "invoke_endpoint_async", answers)
    answers = real_time_answers(target, session, endpoint, requests, target_model)
    return print_table(images, "invoke_endpoint", answers)


# ------------------------------------------------------------------------------------- cleanup


def cleanup(boto_session: boto3.Session, endpoint: str) -> list[str]:
    """Delete the endpoint's autoscaling, the endpoint, its endpoint config and its models.

    Returns what was deleted. Autoscaling goes first: AWS asks for the scalable target to
    be deregistered before its endpoint is deleted.
    """
    client = boto_session.client("sagemaker")
    described = hosting.describe_endpoint(client, endpoint)
    deleted = []
    for variant in described.variants:
        deleted += scaling.Scaler(boto_session, endpoint, variant).remove()
    client.delete_endpoint(EndpointName=endpoint)
    deleted.append(f"endpoint {endpoint}")
    client.delete_endpoint_config(EndpointConfigName=described.config_name)
    deleted.append(f"endpoint config {described.config_name}")
    for model in described.models:
        client.delete_model(ModelName=model)
        deleted.append(f"model {model}")
    for line in deleted:
        print(f"deleted {line}")
    return deleted
