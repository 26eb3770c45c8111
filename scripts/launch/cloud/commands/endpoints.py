"""`deploy`, `invoke` and `cleanup`: endpoints of the serving image in every hosting mode."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.cloud import endpoints, hosting, jobs, sdk, settings
from launch.cloud.commands.common import (
    Aws,
    Command,
    Table,
    add_aws_flags,
    add_sagemaker_flags,
    given,
)
from launch.cloud.hosting import AsyncSettings, Hosting, ScalingSettings, ServerlessSettings
from launch.cloud.limits import ASYNC, ASYNC_DEFAULT_TIMEOUT_S
from launch.cloud.settings import CloudError

# -------------------------------------------------------------------------------------- deploy


def add_deploy_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--job", help="a completed training job whose model to deploy")
    source.add_argument(
        "--model-data",
        help="the model.tar.gz S3 URI to deploy (with --multi-model: the S3 prefix holding "
        "the model archives)",
    )
    parser.add_argument("--serve-image", help="serving image URI (default: from --images-file)")
    parser.add_argument("--endpoint", help="endpoint name (default: imgcls-TIMESTAMP)")
    parser.add_argument(
        "--instance-type",
        default=endpoints.DEFAULT_INSTANCE,
        help=f"endpoint instance type (default: {endpoints.DEFAULT_INSTANCE}, for the CPU "
        "image; not used by --serverless)",
    )
    add_async_flags(parser)
    add_serverless_flags(parser)
    parser.add_argument(
        "--multi-model",
        action="store_true",
        help="host every model archive under --model-data S3_PREFIX on one endpoint; "
        "invoke picks one with --target-model",
    )
    add_scaling_flags(parser)


def add_async_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("asynchronous endpoint")
    group.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="queue requests; inputs and results travel through S3 (up to 1 GB, 1 hour each)",
    )
    group.add_argument(
        "--async-output",
        metavar="S3_URI",
        help="where results go (default: s3://BUCKET/PREFIX/async/ENDPOINT/output)",
    )
    group.add_argument(
        "--async-failure",
        metavar="S3_URI",
        help="where failures go (default: s3://BUCKET/PREFIX/async/ENDPOINT/failure)",
    )
    group.add_argument("--success-topic", metavar="ARN", help="SNS topic told of each result")
    group.add_argument("--error-topic", metavar="ARN", help="SNS topic told of each failure")
    group.add_argument(
        "--max-concurrent-invocations",
        type=int,
        metavar="N",
        help="requests each instance works on at once (default: 2 per serving worker, "
        "one worker per 4 vCPUs)",
    )


def add_serverless_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serverless endpoint")
    group.add_argument(
        "--serverless",
        action="store_true",
        help="no instances: pay per request (CPU only, requests up to 4 MB and 60 s)",
    )
    group.add_argument(
        "--memory-mb",
        type=int,
        help=f"memory, 1024 to 6144 in steps of 1024 "
        f"(default: {hosting.DEFAULT_SERVERLESS_MEMORY_MB})",
    )
    group.add_argument(
        "--max-concurrency",
        type=int,
        help=f"requests served at once (default: {hosting.DEFAULT_SERVERLESS_CONCURRENCY})",
    )


def add_scaling_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("autoscaling (Application Auto Scaling, target tracking)")
    group.add_argument(
        "--min-instances",
        type=int,
        help=f"fewest instances (default: {hosting.DEFAULT_MIN_INSTANCES}; 0 only with --async)",
    )
    group.add_argument(
        "--max-instances", type=int, help="most instances; setting it turns autoscaling on"
    )
    group.add_argument(
        "--target-invocations-per-instance",
        type=float,
        metavar="N",
        help="real-time: invocations per instance per minute to keep (required)",
    )
    group.add_argument(
        "--target-backlog-per-instance",
        type=float,
        metavar="N",
        help=f"--async: queued requests per instance to keep "
        f"(default: {hosting.DEFAULT_BACKLOG_TARGET:g})",
    )


@dataclass(frozen=True)
class ModelSource:
    """The model to serve: an archive on S3 (--model-data), or the one a completed training
    job wrote (--job)."""

    name: str
    from_job: bool

    def model_data(self, sagemaker_client: Any) -> str:
        return endpoints.model_data_of(sagemaker_client, self.name) if self.from_job else self.name


def model_source(args: argparse.Namespace, command: str) -> ModelSource:
    if args.model_data:
        return ModelSource(args.model_data, from_job=False)
    if args.job:
        return ModelSource(args.job, from_job=True)
    raise CloudError(
        f"{command} needs --job NAME (a completed training job) or --model-data S3_URI"
    )


def scaling_plan(args: argparse.Namespace) -> ScalingSettings | None:
    """--min/--max-instances and the target that fits the mode, or None without them."""
    if args.max_instances is None:
        flags = given(
            args, "min_instances", "target_invocations_per_instance", "target_backlog_per_instance"
        )
        if flags:
            raise CloudError(f"{flags[0]} needs --max-instances")
        return None
    if args.asynchronous and args.target_invocations_per_instance is not None:
        raise CloudError("--async scales on its queue: use --target-backlog-per-instance")
    if not args.asynchronous and args.target_backlog_per_instance is not None:
        raise CloudError("--target-backlog-per-instance needs --async")
    return ScalingSettings(
        min_instances=hosting.DEFAULT_MIN_INSTANCES
        if args.min_instances is None
        else args.min_instances,
        max_instances=args.max_instances,
        target=args.target_backlog_per_instance
        if args.asynchronous
        else args.target_invocations_per_instance,
    )


def async_plan(args: argparse.Namespace) -> AsyncSettings | None:
    flags = given(
        args,
        "async_output",
        "async_failure",
        "success_topic",
        "error_topic",
        "max_concurrent_invocations",
    )
    if not args.asynchronous:
        if flags:
            raise CloudError(f"{flags[0]} needs --async")
        return None
    return AsyncSettings(
        output_uri=args.async_output,
        failure_uri=args.async_failure,
        success_topic=args.success_topic,
        error_topic=args.error_topic,
        max_concurrent_invocations=args.max_concurrent_invocations,
    )


def serverless_plan(args: argparse.Namespace) -> ServerlessSettings | None:
    flags = given(args, "memory_mb", "max_concurrency")
    if not args.serverless:
        if flags:
            raise CloudError(f"{flags[0]} needs --serverless")
        return None
    return ServerlessSettings(
        memory_mb=args.memory_mb or hosting.DEFAULT_SERVERLESS_MEMORY_MB,
        max_concurrency=args.max_concurrency or hosting.DEFAULT_SERVERLESS_CONCURRENCY,
    )


def hosting_plan(args: argparse.Namespace) -> Hosting:
    """The hosting mode from deploy's flags; flags of another mode are one-line errors."""
    if args.multi_model and not args.model_data:
        raise CloudError("--multi-model needs --model-data S3_PREFIX, the folder of model archives")
    plan = Hosting(
        multi_model=args.multi_model,
        asynchronous=async_plan(args),
        serverless=serverless_plan(args),
        scaling=scaling_plan(args),
    )
    hosting.check_hosting(plan)
    return plan


@dataclass(frozen=True)
class DeployPlan:
    hosting: Hosting
    image_uri: str
    role: str
    model: ModelSource  # multi-model: the prefix of archives
    endpoint: str | None  # None: a fresh imgcls-TIMESTAMP name
    instance_type: str | None  # None: serverless
    wait: bool
    local: str | None


def plan_deploy(args: argparse.Namespace) -> DeployPlan:
    model = model_source(args, "deploy")
    plan = hosting_plan(args)
    image = settings.image_uri("serve", args.serve_image, args.images_file)
    role = settings.require_role(args.role)
    jobs.require_docker(args.local)
    return DeployPlan(
        hosting=plan,
        image_uri=image,
        role=role,
        model=model,
        endpoint=args.endpoint,
        instance_type=None if plan.serverless else args.local or args.instance_type,
        wait=args.wait,
        local=args.local,
    )


def run_deploy(plan: DeployPlan, aws: Aws) -> int:
    target = aws.target
    session = sdk.calls().sagemaker_session(target, plan.local)
    model_data = plan.model.model_data(session.sagemaker_client)
    if plan.hosting.multi_model:  # SageMaker appends each target model's name to this prefix
        model_data = model_data.rstrip("/") + "/"
    endpoint = plan.endpoint or endpoints.default_endpoint_name()
    hosting_plan = plan.hosting
    if hosting_plan.asynchronous:
        hosting_plan = dataclasses.replace(
            hosting_plan,
            asynchronous=endpoints.with_async_defaults(hosting_plan.asynchronous, target, endpoint),
        )
    endpoints.deploy(
        session,
        plan.image_uri,
        plan.role,
        model_data,
        endpoint,
        plan.instance_type,
        plan.wait,
        hosting_plan,
    )
    return 0


# -------------------------------------------------------------------------------------- invoke


def add_invoke_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", required=True, help="endpoint name")
    parser.add_argument(
        "--payload",
        choices=endpoints.PAYLOADS,
        default=endpoints.PAYLOADS[0],
        help="send image bytes (image/jpeg, image/png) or JSON with base64 images "
        f'({{"instances": [{{"b64": ...}}]}}) (default: {endpoints.PAYLOADS[0]})',
    )
    parser.add_argument(
        "--target-model",
        metavar="NAME",
        help="multi-model endpoints: the archive to use, relative to the endpoint's prefix "
        "(e.g. customer-a.tar.gz)",
    )
    parser.add_argument(
        "--async-timeout",
        type=int,
        default=ASYNC_DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="asynchronous endpoints: how long each request may run and how long invoke "
        f"waits for the results (default: {ASYNC_DEFAULT_TIMEOUT_S}, at most {ASYNC.timeout_s})",
    )
    parser.add_argument(
        "images", type=Path, nargs="+", metavar="FILES_OR_DIR", help=".jpg/.png files or folders"
    )


@dataclass(frozen=True)
class InvokePlan:
    endpoint: str
    images: list[Path]  # files or folders
    payload: str  # one of endpoints.PAYLOADS
    target_model: str | None
    async_timeout_s: int


def plan_invoke(args: argparse.Namespace) -> InvokePlan:
    if not 1 <= args.async_timeout <= ASYNC.timeout_s:
        raise CloudError(f"--async-timeout must be 1 to {ASYNC.timeout_s} seconds")
    return InvokePlan(
        args.endpoint, args.images, args.payload, args.target_model, args.async_timeout
    )


def run_invoke(plan: InvokePlan, aws: Aws) -> int:
    """1 when an image has no answer, or the SDK's and boto3's answers differ."""
    session = sdk.calls().sagemaker_session(aws.target)
    problems = endpoints.invoke(
        aws.target,
        session,
        plan.endpoint,
        plan.images,
        plan.payload,
        target_model=plan.target_model,
        async_timeout_s=plan.async_timeout_s,
    )
    if problems:
        print(f"{problems} images without a matching answer from both paths", file=sys.stderr)
    return 1 if problems else 0


# ------------------------------------------------------------------------------------- cleanup


def add_cleanup_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", required=True, help="endpoint name")


def plan_cleanup(args: argparse.Namespace) -> str:
    """The endpoint whose autoscaling, endpoint config and models go with it."""
    return str(args.endpoint)


def run_cleanup(endpoint: str, aws: Aws) -> int:
    endpoints.cleanup(aws.target.session, endpoint)
    return 0


COMMANDS: Table = [
    Command(
        "deploy",
        "deploy a trained model: real-time, asynchronous, serverless or multi-model",
        (add_aws_flags, add_sagemaker_flags, add_deploy_flags),
        plan_deploy,
        run_deploy,
    ),
    Command(
        "invoke",
        "classify images with the SDK Predictor and with boto3",
        (add_aws_flags, add_invoke_flags),
        plan_invoke,
        run_invoke,
    ),
    Command(
        "cleanup",
        "delete an endpoint, its autoscaling, its endpoint config and model",
        (add_aws_flags, add_cleanup_flags),
        plan_cleanup,
        run_cleanup,
    ),
]
