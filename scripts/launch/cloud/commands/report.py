"""`report`: plot a job's losses and list its rules' verdicts."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from launch.cloud import report, settings
from launch.cloud.commands.common import Aws, Command, Table, add_aws_flags


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--job",
        required=True,
        help="SageMaker training job name, or a local job folder (scripts/local.py --job-dir)",
    )
    parser.add_argument("--tensors", help="Debugger output to read instead (a folder or s3:// URI)")
    parser.add_argument(
        "--plot", type=Path, help="loss plot PNG (default: build/cloud/JOB-loss.png)"
    )


@dataclass(frozen=True)
class ReportPlan:
    job: str  # a SageMaker training job, or a local job folder
    tensors: str | None
    png: Path


def plan(args: argparse.Namespace) -> ReportPlan:
    name = Path(args.job).name
    return ReportPlan(args.job, args.tensors, settings.output_file(args.plot, f"{name}-loss.png"))


def run(plan: ReportPlan, aws: Aws) -> int:
    local_dir = Path(plan.job)
    if plan.tensors:
        info = report.JobDebugInfo(tensors=plan.tensors)
    elif local_dir.is_dir():
        info = report.local_job_info(local_dir)
    else:  # only a SageMaker job needs AWS
        client = aws.target.session.client("sagemaker")
        info = report.sagemaker_job_info(client, aws.target.region, plan.job)
    report.report(local_dir.name, info, plan.png)
    return 0


COMMANDS: Table = [
    Command(
        "report",
        "plot a job's losses (Debugger, else TensorBoard, else metrics.json); list its "
        "rules' verdicts",
        (add_aws_flags, add_flags),
        plan,
        run,
    )
]
