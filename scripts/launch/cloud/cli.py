"""Launch the image classifier on Amazon SageMaker: upload, tune, train, report, deploy, invoke.

    python scripts/cloud.py upload --data DIR
    python scripts/cloud.py tune
    python scripts/cloud.py train --tuning-job NAME
    python scripts/cloud.py report --job NAME
    python scripts/cloud.py deploy --job NAME [--async | --serverless | --multi-model]
    python scripts/cloud.py invoke --endpoint NAME IMAGES...
    python scripts/cloud.py cleanup --endpoint NAME
    python scripts/cloud.py transform --job NAME --input S3_URI_OR_DIR
    python scripts/cloud.py transform-report --job TRANSFORM_JOB

Uses the SageMaker Python SDK 2.x with this project's images (from build/images.json,
which build_and_push.sh writes; --train-image/--serve-image override). AWS settings come
from flags, then the environment (AWS_DEFAULT_REGION, AWS_PROFILE, SAGEMAKER_ROLE,
SAGEMAKER_BUCKET, SAGEMAKER_PREFIX), then defaults; AWS_ENDPOINT_URL points everything
at another endpoint (the tests use a local emulator).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from launch.cloud import data, endpoints, hosting, jobs, report, settings, transform
from launch.cloud.hosting import AsyncSettings, Hosting, ScalingSettings, ServerlessSettings
from launch.cloud.limits import ASYNC, ASYNC_DEFAULT_TIMEOUT_S
from launch.cloud.settings import CloudError
from launch.options import hyperparameter_flags
from trainer.search_space import OBJECTIVES

DEFAULT_TRAIN_INSTANCE = "ml.g4dn.xlarge"
DEFAULT_SERVE_INSTANCE = "ml.t2.medium"


# ------------------------------------------------------------------------------ the commands


def parse_hyperparameters(pairs: list[str]) -> dict[str, str]:
    try:
        return hyperparameter_flags(pairs)
    except ValueError as error:
        raise CloudError(str(error)) from None


def run_upload(args: argparse.Namespace) -> int:
    fractions = data.SplitFractions(args.valid_fraction, args.test_fraction, args.seed)
    split = data.plan_split(args.data, fractions)  # local problems first
    target = settings.resolve_target(args.region, args.bucket, args.prefix)
    data.upload(target, split, args.workers)
    return 0


def job_settings(args: argparse.Namespace, hyperparameters: dict[str, str]) -> jobs.JobSettings:
    return jobs.JobSettings(
        image_uri=settings.image_uri("train", args.train_image, args.images_file),
        role=settings.require_role(args.role),
        instance_type=args.local or args.instance_type,
        max_run_s=args.max_run,
        spot=args.spot,
        max_wait_s=args.max_wait,
        hyperparameters=hyperparameters,
        instance_count=args.instance_count,
        input_mode=args.input_mode,
    )


def run_tune(args: argparse.Namespace) -> int:
    if args.local:
        raise CloudError("tune has no local mode: tuning jobs run only on SageMaker")
    hyperparameters = parse_hyperparameters(args.hp)
    job = job_settings(args, hyperparameters)
    target = settings.resolve_target(args.region, args.bucket, args.prefix)
    settings.require_bucket(target)
    tuning = jobs.TuningSettings(
        args.objective, args.max_jobs, args.max_parallel_jobs, args.early_stopping
    )
    session = settings.sagemaker_session(target)
    output = settings.output_file(args.output, "best-hyperparameters.json")
    jobs.tune(target, session, job, tuning, args.data_uri, args.wait, output)
    return 0


def run_train(args: argparse.Namespace) -> int:
    overrides = parse_hyperparameters(args.hp)
    image_and_role = job_settings(args, {})  # fail fast on a missing image or role
    jobs.require_docker(args.local)
    target = settings.resolve_target(args.region, args.bucket, args.prefix)
    if not (args.data_uri or "").startswith("file://"):
        settings.require_bucket(target)
    session = settings.sagemaker_session(target, args.local)
    loaded = jobs.load_hyperparameters(  # tuning jobs live on SageMaker, even for --local
        target.session.client("sagemaker"), args.tuning_job, args.hyperparameters
    )
    job = jobs.replace_hyperparameters(image_and_role, {**loaded, **overrides})
    debugger = jobs.DebuggerSettings(save_interval=args.save_interval) if args.debugger else None
    jobs.train(target, session, job, debugger, args.data_uri, args.wait, args.local)
    return 0


def run_report(args: argparse.Namespace) -> int:
    local_dir = Path(args.job)
    if args.tensors:
        info = report.JobDebugInfo(tensors=args.tensors)
    elif local_dir.is_dir():
        info = report.local_job_info(local_dir)
    else:
        target = settings.resolve_target(args.region, args.bucket, args.prefix)
        client = target.session.client("sagemaker")
        info = report.sagemaker_job_info(client, target.region, args.job)
    png = settings.output_file(args.plot, f"{local_dir.name}-loss.png")
    report.report(local_dir.name, info, png)
    return 0


def model_source(args: argparse.Namespace, command: str) -> None:
    if not (args.job or args.model_data):
        raise CloudError(
            f"{command} needs --job NAME (a completed training job) or --model-data S3_URI"
        )


def given(args: argparse.Namespace, *names: str) -> list[str]:
    """The flags among `names` (argparse dests) that were set on the command line."""
    return ["--" + name.replace("_", "-") for name in names if getattr(args, name) is not None]


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
        min_instances=1 if args.min_instances is None else args.min_instances,
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


def deploy_plan(args: argparse.Namespace) -> Hosting:
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


def run_deploy(args: argparse.Namespace) -> int:
    model_source(args, "deploy")
    plan = deploy_plan(args)
    image = settings.image_uri("serve", args.serve_image, args.images_file)
    role = settings.require_role(args.role)
    jobs.require_docker(args.local)
    target = settings.resolve_target(args.region, args.bucket, args.prefix)
    session = settings.sagemaker_session(target, args.local)
    model_data = args.model_data or endpoints.model_data_of(session.sagemaker_client, args.job)
    if plan.multi_model:  # SageMaker appends each target model's name to this prefix
        model_data = model_data.rstrip("/") + "/"
    endpoint = args.endpoint or endpoints.default_endpoint_name()
    if plan.asynchronous:
        plan = dataclasses.replace(
            plan, asynchronous=endpoints.with_async_defaults(plan.asynchronous, target, endpoint)
        )
    instance_type = None if plan.serverless else args.local or args.instance_type
    endpoints.deploy(session, image, role, model_data, endpoint, instance_type, args.wait, plan)
    return 0


def run_invoke(args: argparse.Namespace) -> int:
    if not 1 <= args.async_timeout <= ASYNC.timeout_s:
        raise CloudError(f"--async-timeout must be 1 to {ASYNC.timeout_s} seconds")
    target = settings.resolve_target(args.region, args.bucket, args.prefix)
    session = settings.sagemaker_session(target)
    problems = endpoints.invoke(
        target,
        session,
        args.endpoint,
        args.images,
        args.payload,
        target_model=args.target_model,
        async_timeout_s=args.async_timeout,
    )
    if problems:
        print(f"{problems} images without a matching answer from both paths", file=sys.stderr)
    return 1 if problems else 0


def run_cleanup(args: argparse.Namespace) -> int:
    target = settings.resolve_target(args.region, args.bucket, args.prefix)
    endpoints.cleanup(target.session, args.endpoint)
    return 0


def run_transform(args: argparse.Namespace) -> int:
    if args.local:
        raise CloudError("transform has no local mode: Batch Transform runs only on SageMaker")
    model_source(args, "transform")
    job_settings = transform.TransformSettings(
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        max_payload_mb=args.max_payload_mb,
        max_concurrent=args.max_concurrent_transforms,
        invocation_timeout_s=args.invocation_timeout,
    )
    transform.check_settings(job_settings)
    image = settings.image_uri("serve", args.serve_image, args.images_file)
    role = settings.require_role(args.role)
    target = settings.resolve_target(args.region, args.bucket, args.prefix)
    settings.require_bucket(target)
    session = settings.sagemaker_session(target)
    model_data = args.model_data or endpoints.model_data_of(session.sagemaker_client, args.job)
    transform.transform(
        target,
        session,
        image,
        role,
        model_data,
        source=args.input,
        output_uri=args.output,
        settings=job_settings,
        wait=args.wait,
        csv_path=args.csv,
        workers=args.workers,
    )
    return 0


def run_transform_report(args: argparse.Namespace) -> int:
    target = settings.resolve_target(args.region, args.bucket, args.prefix)
    s3, client = target.session.client("s3"), target.session.client("sagemaker")
    transform.report(s3, client, args.job, args.csv, args.workers)
    return 0


# -------------------------------------------------------------------------------- the parser


def aws_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("AWS")
    group.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION or the profile's)")
    group.add_argument(
        "--bucket",
        help=f"S3 bucket (default: {settings.BUCKET_ENV}, else sagemaker-REGION-ACCOUNT)",
    )
    group.add_argument(
        "--prefix",
        help=f"S3 key prefix (default: {settings.PREFIX_ENV}, else {settings.DEFAULT_PREFIX})",
    )
    return flags


def sagemaker_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("SageMaker")
    group.add_argument("--role", help=f"IAM role ARN for SageMaker (default: {settings.ROLE_ENV})")
    group.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the job or endpoint has finished or is InService (default: wait)",
    )
    group.add_argument(
        "--images-file",
        type=Path,
        default=settings.default_images_file(),
        help="image URIs written by build_and_push.sh (default: $IMAGES_FILE, "
        "else build/images.json in the working directory; build_and_push.sh writes it in the "
        "repository's build/)",
    )
    group.add_argument(
        "--local",
        nargs="?",
        const="local",
        choices=settings.LOCAL_INSTANCE_TYPES,
        help="SageMaker local mode on this machine's Docker: local (CPU) or local_gpu",
    )
    return flags


def training_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("training job")
    group.add_argument("--train-image", help="training image URI (default: from --images-file)")
    group.add_argument(
        "--data-uri",
        help="S3 prefix (or file:// folder for --local) holding train/, valid/ and optional "
        "test/ (default: s3://BUCKET/PREFIX/data, where upload puts them)",
    )
    group.add_argument(
        "--instance-type",
        default=DEFAULT_TRAIN_INSTANCE,
        help=f"training instance type (default: {DEFAULT_TRAIN_INSTANCE}); on a multi-GPU "
        "type (ml.g4dn.12xlarge: 4 GPUs) the job runs one worker per GPU",
    )
    group.add_argument(
        "--instance-count",
        type=int,
        default=1,
        help="instances per training job; one host is the leader, each runs one worker per "
        "GPU (default: 1)",
    )
    group.add_argument(
        "--input-mode",
        choices=jobs.INPUT_MODES,
        default="File",
        help="File: channels downloaded before the job starts; FastFile: streamed from S3 "
        "as the job reads them, for large channels (default: File)",
    )
    group.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter for every job, e.g. epochs=10 (repeatable; wins over others)",
    )
    group.add_argument(
        "--spot", action="store_true", help="managed spot training, with checkpoints on S3"
    )
    group.add_argument(
        "--max-run", type=int, default=24 * 3600, help="job time limit (seconds, default: 86400)"
    )
    group.add_argument(
        "--max-wait",
        type=int,
        help="spot only: limit including waiting for capacity (seconds, default: --max-run)",
    )
    return flags


def add_upload(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "upload", parents=parents, help="split a local data set into channels and upload them"
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="train/valid/test ImageFolders, Kaggle train/<class> (+ test/<class>) folders, "
        "or flat cat.N.jpg/dog.N.jpg files",
    )
    parser.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="share of each class held out for validation when splitting (default: 0.1)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of each class held out for test when there is no test set (default: 0.1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    parser.add_argument("--workers", type=int, default=8, help="parallel uploads (default: 8)")


def add_tune(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "tune", parents=parents, help="hyperparameter tuning job (Bayesian, early stopping)"
    )
    parser.add_argument(
        "--objective",
        choices=sorted(OBJECTIVES),
        default="valid_accuracy",
        help="metric to optimise: "
        + ", ".join(f"{name} ({o.direction.lower()})" for name, o in sorted(OBJECTIVES.items())),
    )
    parser.add_argument("--max-jobs", type=int, default=8, help="training jobs in all (default: 8)")
    parser.add_argument(
        "--max-parallel-jobs", type=int, default=2, help="jobs at a time (default: 2)"
    )
    parser.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop jobs that are unlikely to beat the best one (default: on)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="best hyperparameters JSON (default: build/cloud/best-hyperparameters.json)",
    )


def add_train(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "train",
        parents=parents,
        help="training job with TensorBoard scalars, Debugger rules and profiling",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tuning-job", help="use the best hyperparameters of this tuning job")
    source.add_argument(
        "--hyperparameters",
        type=Path,
        help="use the hyperparameters in this JSON file (tune's output, or a flat object)",
    )
    parser.add_argument(
        "--save-interval",
        type=int,
        default=10,
        help="Debugger saves the losses every this many steps (default: 10)",
    )
    parser.add_argument(
        "--debugger",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SageMaker Debugger hook, rules and profiler; --no-debugger for accounts without "
        "Debugger (closed to new customers): TensorBoard scalars only (default: on)",
    )


def add_report(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "report",
        parents=parents,
        help="plot a job's losses (Debugger, else TensorBoard, else metrics.json); list its "
        "rules' verdicts",
    )
    parser.add_argument(
        "--job",
        required=True,
        help="SageMaker training job name, or a local job folder (scripts/local.py --job-dir)",
    )
    parser.add_argument("--tensors", help="Debugger output to read instead (a folder or s3:// URI)")
    parser.add_argument(
        "--plot", type=Path, help="loss plot PNG (default: build/cloud/JOB-loss.png)"
    )


def add_deploy(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "deploy",
        parents=parents,
        help="deploy a trained model: real-time, asynchronous, serverless or multi-model",
    )
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
        default=DEFAULT_SERVE_INSTANCE,
        help=f"endpoint instance type (default: {DEFAULT_SERVE_INSTANCE}, for the CPU image; "
        "not used by --serverless)",
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
        help="fewest instances (default: 1; 0 only with --async)",
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


def add_invoke(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "invoke", parents=parents, help="classify images with the SDK Predictor and with boto3"
    )
    parser.add_argument("--endpoint", required=True, help="endpoint name")
    parser.add_argument(
        "--payload",
        choices=endpoints.PAYLOADS,
        default="image",
        help="send image bytes (image/jpeg, image/png) or JSON with base64 images "
        '({"instances": [{"b64": ...}]}) (default: image)',
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


def add_cleanup(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "cleanup",
        parents=parents,
        help="delete an endpoint, its autoscaling, its endpoint config and model",
    )
    parser.add_argument("--endpoint", required=True, help="endpoint name")


def add_transform(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "transform",
        parents=parents,
        help="Batch Transform: classify every image under an S3 prefix or a local folder",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--job", help="a completed training job whose model to use")
    source.add_argument("--model-data", help="the model.tar.gz S3 URI to use")
    parser.add_argument("--serve-image", help="serving image URI (default: from --images-file)")
    parser.add_argument(
        "--input",
        required=True,
        metavar="S3_URI_OR_DIR",
        help="an S3 prefix holding only .jpg/.jpeg/.png images, or a local folder (its "
        "images are uploaded to s3://BUCKET/PREFIX/transform/JOB/input/)",
    )
    parser.add_argument(
        "--output",
        metavar="S3_URI",
        help="where the .out results go (default: s3://BUCKET/PREFIX/transform/JOB/output)",
    )
    parser.add_argument(
        "--instance-type",
        default=transform.DEFAULT_INSTANCE,
        help=f"instance type (default: {transform.DEFAULT_INSTANCE})",
    )
    parser.add_argument(
        "--instance-count", type=int, default=1, help="instances sharing the images (default: 1)"
    )
    parser.add_argument(
        "--max-payload-mb",
        type=int,
        default=transform.TransformSettings.max_payload_mb,
        help="the largest image, in MB; the container is told the same "
        f"(default: {transform.TransformSettings.max_payload_mb}, the serving image's limit)",
    )
    parser.add_argument(
        "--max-concurrent-transforms",
        type=int,
        metavar="N",
        help="requests per instance at once (default: 2 per serving worker, one worker per "
        "4 vCPUs)",
    )
    parser.add_argument(
        "--invocation-timeout",
        type=int,
        default=transform.TransformSettings.invocation_timeout_s,
        metavar="SECONDS",
        help="per request (default: "
        f"{transform.TransformSettings.invocation_timeout_s}: one request queued ahead, each "
        "within the model server's 60 s)",
    )
    add_transform_output_flags(parser)


def add_transform_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv", type=Path, help="the results CSV (default: build/cloud/JOB-predictions.csv)"
    )
    parser.add_argument(
        "--workers", type=int, default=8, help="parallel S3 uploads and reads (default: 8)"
    )


def add_transform_report(commands: argparse._SubParsersAction, parents: list) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "transform-report",
        parents=parents,
        help="gather a transform job's results into one CSV; count each class",
    )
    parser.add_argument("--job", required=True, help="the transform job (printed by transform)")
    add_transform_output_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    aws, sagemaker, training = aws_flags(), sagemaker_flags(), training_flags()
    add_upload(commands, [aws])
    add_tune(commands, [aws, sagemaker, training])
    add_train(commands, [aws, sagemaker, training])
    add_report(commands, [aws])
    add_deploy(commands, [aws, sagemaker])
    add_invoke(commands, [aws])
    add_cleanup(commands, [aws])
    add_transform(commands, [aws, sagemaker])
    add_transform_report(commands, [aws])
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "upload": run_upload,
    "tune": run_tune,
    "train": run_train,
    "report": run_report,
    "deploy": run_deploy,
    "invoke": run_invoke,
    "cleanup": run_cleanup,
    "transform": run_transform,
    "transform-report": run_transform_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Before the SDK is imported: one of its modules sets the root logger to INFO otherwise.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except CloudError as error:
        print(f"error: {error}", file=sys.stderr)
    except (BotoCoreError, ClientError) as error:  # AWS said no: one line, not a traceback
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
    return 1
