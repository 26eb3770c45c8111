"""`transform` and `transform-report`: Batch Transform with the serving image, then one CSV."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from launch.cloud import data, sdk, settings, transform
from launch.cloud.commands.common import Aws, Command, Table, add_aws_flags, add_sagemaker_flags
from launch.cloud.commands.endpoints import ModelSource, model_source
from launch.cloud.settings import CloudError, unique_name
from launch.cloud.transform import TransformSettings

# ----------------------------------------------------------------------------------- transform


def add_transform_flags(parser: argparse.ArgumentParser) -> None:
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
        default=TransformSettings.instance_type,
        help=f"instance type (default: {TransformSettings.instance_type})",
    )
    parser.add_argument(
        "--instance-count",
        type=int,
        default=TransformSettings.instance_count,
        help=f"instances sharing the images (default: {TransformSettings.instance_count})",
    )
    parser.add_argument(
        "--max-payload-mb",
        type=int,
        default=TransformSettings.max_payload_mb,
        help="the largest image, in MB; the container is told the same "
        f"(default: {TransformSettings.max_payload_mb}, the serving image's limit)",
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
        default=TransformSettings.invocation_timeout_s,
        metavar="SECONDS",
        help="per request (default: "
        f"{TransformSettings.invocation_timeout_s}: one request queued ahead, each "
        "within the model server's 60 s)",
    )
    add_output_flags(parser)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv", type=Path, help="the results CSV (default: build/cloud/JOB-predictions.csv)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=data.DEFAULT_WORKERS,
        help=f"parallel S3 uploads and reads (default: {data.DEFAULT_WORKERS})",
    )


@dataclass(frozen=True)
class TransformPlan:
    settings: TransformSettings
    image_uri: str
    role: str
    model: ModelSource
    source: str  # an s3:// prefix, or a local folder to upload
    output_uri: str | None  # None: s3://BUCKET/PREFIX/transform/JOB/output
    wait: bool
    csv_path: Path | None
    workers: int


def plan_transform(args: argparse.Namespace) -> TransformPlan:
    if args.local:
        raise CloudError("transform has no local mode: Batch Transform runs only on SageMaker")
    model = model_source(args, "transform")
    job_settings = TransformSettings(
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        max_payload_mb=args.max_payload_mb,
        max_concurrent=args.max_concurrent_transforms,
        invocation_timeout_s=args.invocation_timeout,
    )
    transform.check_settings(job_settings)
    return TransformPlan(
        settings=job_settings,
        image_uri=settings.image_uri("serve", args.serve_image, args.images_file),
        role=settings.require_role(args.role),
        model=model,
        source=args.input,
        output_uri=args.output,
        wait=args.wait,
        csv_path=args.csv,
        workers=args.workers,
    )


def run_transform(plan: TransformPlan, aws: Aws) -> int:
    """Start a Batch Transform job; when waiting, gather its results."""
    target = aws.target
    settings.require_bucket(target)
    session = sdk.calls().sagemaker_session(target)
    model_data = plan.model.model_data(session.sagemaker_client)
    name = unique_name(transform.TRANSFORM_BASE)
    input_uri, content_type = transform.prepare_input(
        target, plan.source, name, plan.settings.max_payload_mb, plan.workers
    )
    job = transform.TransformJobPlan(
        name=name,
        image_uri=plan.image_uri,
        role=plan.role,
        model_data=model_data,
        input_uri=input_uri,
        content_type=content_type,
        output_uri=(plan.output_uri or target.s3_uri("transform", name, "output")).rstrip("/"),
        settings=plan.settings,
    )
    sdk.calls().start_transform_job(session, job)
    transform.print_job(job)
    if not plan.wait:
        print(f"when it has finished: python scripts/cloud.py transform-report --job {name}")
        print(f"      then: aws sagemaker delete-model --model-name {name}")
        return 0
    try:
        status = transform.wait_for_job(session.sagemaker_client, name)
    finally:
        session.sagemaker_client.delete_model(ModelName=name)  # only the job needed it
    print(f"status: {status}")
    s3 = target.session.client("s3")
    transform.report(s3, session.sagemaker_client, name, plan.csv_path, plan.workers)
    return 0


# ---------------------------------------------------------------------------- transform-report


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", required=True, help="the transform job (printed by transform)")
    add_output_flags(parser)


@dataclass(frozen=True)
class ReportPlan:
    job: str
    csv_path: Path | None
    workers: int


def plan_report(args: argparse.Namespace) -> ReportPlan:
    return ReportPlan(args.job, args.csv, args.workers)


def run_report(plan: ReportPlan, aws: Aws) -> int:
    s3, client = aws.target.session.client("s3"), aws.target.session.client("sagemaker")
    transform.report(s3, client, plan.job, plan.csv_path, plan.workers)
    return 0


COMMANDS: Table = [
    Command(
        "transform",
        "Batch Transform: classify every image under an S3 prefix or a local folder",
        (add_aws_flags, add_sagemaker_flags, add_transform_flags),
        plan_transform,
        run_transform,
    ),
    Command(
        "transform-report",
        "gather a transform job's results into one CSV; count each class",
        (add_aws_flags, add_report_flags),
        plan_report,
        run_report,
    ),
]
