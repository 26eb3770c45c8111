"""`tune` and `train`: SageMaker jobs of the training image.

Their hyperparameters are checked with the training job's own rule while planning, so a
value the job would refuse is refused here, in milliseconds, with the job's reason.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.cloud import jobs, sdk, settings
from launch.cloud.commands.common import Aws, Command, Table, add_aws_flags, add_sagemaker_flags
from launch.cloud.settings import CloudError, unique_name
from launch.options import check_hyperparameters, hyperparameter_flags
from launch.search_space import OBJECTIVES, trial_hyperparameters

# The flags' defaults are the settings' own (a dataclass keeps each default on its class).
JOB, TUNING, DEBUGGER = jobs.JobSettings, jobs.TuningSettings, jobs.DebuggerSettings
BEST_HYPERPARAMETERS_FILE = "best-hyperparameters.json"


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training job")
    group.add_argument("--train-image", help="training image URI (default: from --images-file)")
    group.add_argument(
        "--data-uri",
        help="S3 prefix (or file:// folder for --local) holding train/, valid/ and optional "
        "test/ (default: s3://BUCKET/PREFIX/data, where upload puts them)",
    )
    group.add_argument(
        "--instance-type",
        default=JOB.instance_type,
        help=f"training instance type (default: {JOB.instance_type}); on a multi-GPU "
        "type (ml.g4dn.12xlarge: 4 GPUs) the job runs one worker per GPU",
    )
    group.add_argument(
        "--instance-count",
        type=int,
        default=JOB.instance_count,
        help="instances per training job; one host is the leader, each runs one worker per "
        f"GPU (default: {JOB.instance_count})",
    )
    group.add_argument(
        "--input-mode",
        choices=jobs.INPUT_MODES,
        default=JOB.input_mode,
        help="File: channels downloaded before the job starts; FastFile: streamed from S3 "
        f"as the job reads them, for large channels (default: {JOB.input_mode})",
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
        "--max-run",
        type=int,
        default=JOB.max_run_s,
        help=f"job time limit (seconds, default: {JOB.max_run_s})",
    )
    group.add_argument(
        "--max-wait",
        type=int,
        help="spot only: limit including waiting for capacity (seconds, default: --max-run)",
    )


def job_settings(args: argparse.Namespace, hyperparameters: dict[str, str]) -> jobs.JobSettings:
    """The job's settings from the flags; a missing image or role is refused here."""
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


# ---------------------------------------------------------------------------------------- tune


def add_tune_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--objective",
        choices=sorted(OBJECTIVES),
        default=TUNING.objective,
        help="metric to optimise: "
        + ", ".join(f"{name} ({o.direction.lower()})" for name, o in sorted(OBJECTIVES.items()))
        + f" (default: {TUNING.objective})",
    )
    parser.add_argument(
        "--max-jobs",
        type=int,
        default=TUNING.max_jobs,
        help=f"training jobs in all (default: {TUNING.max_jobs})",
    )
    parser.add_argument(
        "--max-parallel-jobs",
        type=int,
        default=TUNING.max_parallel_jobs,
        help=f"jobs at a time (default: {TUNING.max_parallel_jobs})",
    )
    parser.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=TUNING.early_stopping,
        help="stop jobs that are unlikely to beat the best one (default: on)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="best hyperparameters JSON "
        f"(default: {settings.OUTPUT_DIR / BEST_HYPERPARAMETERS_FILE})",
    )


@dataclass(frozen=True)
class TunePlan:
    job: jobs.JobSettings  # the static hyperparameters, checked
    tuning: jobs.TuningSettings
    data_uri: str | None
    wait: bool
    output: Path  # where the best job's hyperparameters go


def plan_tune(args: argparse.Namespace) -> TunePlan:
    if args.local:
        raise CloudError("tune has no local mode: tuning jobs run only on SageMaker")
    hyperparameters = hyperparameter_flags(args.hp)
    check_hyperparameters(hyperparameters)
    return TunePlan(
        job=job_settings(args, trial_hyperparameters(hyperparameters)),
        tuning=jobs.TuningSettings(
            args.objective, args.max_jobs, args.max_parallel_jobs, args.early_stopping
        ),
        data_uri=args.data_uri,
        wait=args.wait,
        output=settings.output_file(args.output, BEST_HYPERPARAMETERS_FILE),
    )


def tune(plan: TunePlan, aws: Aws) -> dict[str, Any] | None:
    """Start a tuning job; when waiting, print, save and return its best job."""
    target = aws.target
    settings.require_bucket(target)
    session = sdk.calls().sagemaker_session(target)
    name = unique_name(jobs.TUNE_JOB_BASE)
    tuning = jobs.TuningJobPlan(
        jobs.estimator_plan(target, plan.job, name, plan.data_uri), plan.tuning
    )
    sdk.calls().start_tuning_job(session, tuning)
    tuning_settings = plan.tuning
    print(
        f"tuning job {name}: {tuning_settings.max_jobs} jobs, "
        f"{tuning_settings.max_parallel_jobs} in parallel"
    )
    for channel, uri in tuning.estimator.inputs.items():
        print(f"  {channel:5} {uri}")
    if not plan.wait:
        print(f"when it has finished: python scripts/cloud.py train --tuning-job {name}")
        return None
    status = jobs.wait_for_tuning_job(session.sagemaker_client, name)
    if status != "Completed":
        raise CloudError(f"tuning job {name} ended {status}")
    best = jobs.best_hyperparameters(session.sagemaker_client, name)
    jobs.save_best(best, plan.output)
    return best


def run_tune(plan: TunePlan, aws: Aws) -> int:
    tune(plan, aws)
    return 0


# --------------------------------------------------------------------------------------- train


def add_train_flags(parser: argparse.ArgumentParser) -> None:
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
        default=DEBUGGER.save_interval,
        help=f"Debugger saves the losses every this many steps (default: {DEBUGGER.save_interval})",
    )
    parser.add_argument(
        "--debugger",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SageMaker Debugger hook, rules and profiler; --no-debugger for accounts without "
        "Debugger (closed to new customers): TensorBoard scalars only (default: on)",
    )


@dataclass(frozen=True)
class TrainPlan:
    job: jobs.JobSettings  # hyperparameters: the file's overlaid with --hp, checked
    tuning_job: str | None  # its best job's hyperparameters go under job's (read from AWS)
    debugger: jobs.DebuggerSettings | None  # None: TensorBoard scalars only
    data_uri: str | None
    wait: bool
    local: str | None


def plan_train(args: argparse.Namespace) -> TrainPlan:
    loaded = jobs.read_hyperparameters_file(args.hyperparameters) if args.hyperparameters else {}
    hyperparameters = {**loaded, **hyperparameter_flags(args.hp)}
    check_hyperparameters(hyperparameters)
    job = job_settings(args, hyperparameters)
    jobs.require_docker(args.local)
    return TrainPlan(
        job=job,
        tuning_job=args.tuning_job,
        debugger=jobs.DebuggerSettings(save_interval=args.save_interval) if args.debugger else None,
        data_uri=args.data_uri,
        wait=args.wait,
        local=args.local,
    )


def with_tuning_job(
    job: jobs.JobSettings, sagemaker_client: Any, tuning_job: str
) -> jobs.JobSettings:
    """The job with a tuning job's best hyperparameters under its own (--hp, checked while
    planning; the tuning job's were its own jobs' hyperparameters)."""
    best = jobs.best_hyperparameters(sagemaker_client, tuning_job)["hyperparameters"]
    return dataclasses.replace(job, hyperparameters={**best, **job.hyperparameters})


def train(plan: TrainPlan, aws: Aws) -> str:
    """Start (and by default wait for) one training job; returns its name."""
    target = aws.target
    if not (plan.data_uri or "").startswith("file://"):
        settings.require_bucket(target)
    session = sdk.calls().sagemaker_session(target, plan.local)
    job = plan.job
    if plan.tuning_job:  # tuning jobs live on SageMaker, even for --local
        job = with_tuning_job(job, target.session.client("sagemaker"), plan.tuning_job)
    name = unique_name(jobs.TRAIN_JOB_BASE)
    training = jobs.TrainingJobPlan(
        jobs.estimator_plan(target, job, name, plan.data_uri),
        None if plan.local else jobs.monitoring(target, name, plan.debugger),
    )
    estimator = sdk.calls().start_training_job(session, training)
    jobs.print_training_job(training)
    if plan.wait:
        sdk.calls().wait_for_training_job(estimator)
    described = session.sagemaker_client.describe_training_job(TrainingJobName=name)
    print(f"status: {described['TrainingJobStatus']}")
    if described["TrainingJobStatus"] == "Completed":
        print(f"model: {described['ModelArtifacts']['S3ModelArtifacts']}")
    if training.monitoring is not None:
        if training.monitoring.debugger is not None:
            print(f"debugger output: {sdk.calls().debugger_artifacts_path(estimator)}")
        print(f"tensorboard output: {training.monitoring.tensorboard_uri}")
    print(f"next: python scripts/cloud.py report --job {name}")
    print(f"      python scripts/cloud.py deploy --job {name}")
    return name


def run_train(plan: TrainPlan, aws: Aws) -> int:
    train(plan, aws)
    return 0


COMMANDS: Table = [
    Command(
        "tune",
        "hyperparameter tuning job (Bayesian, early stopping)",
        (add_aws_flags, add_sagemaker_flags, add_training_flags, add_tune_flags),
        plan_tune,
        run_tune,
    ),
    Command(
        "train",
        "training job with TensorBoard scalars, Debugger rules and profiling",
        (add_aws_flags, add_sagemaker_flags, add_training_flags, add_train_flags),
        plan_train,
        run_train,
    ),
]
