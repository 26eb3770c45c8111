"""`tune` and `train`: the plans of SageMaker jobs around the training image, and the
boto3 reads around them (channels, a tuning job's progress and best job).

`sdk2` or `sdk3` (see `sdk`) turns the plans into SDK calls; the metric regexes come from the
training code (`trainer.metrics`) and the search space and objectives from
`launch.search_space`, so the tuner reads exactly the lines the job prints and searches
exactly the ranges local tuning searches.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch.cloud.settings import AwsTarget, CloudError, shown_path, split_s3_uri
from launch.search_space import (
    DEFAULT_OBJECTIVE,
    OBJECTIVES,
    Objective,
    without_trial_settings,
)
from trainer.contract import (
    IMAGE_CHANNELS,
    REQUIRED_CHANNELS,
    is_platform_key,
    training_paths,
)

# The training image's paths on SageMaker (no SAGEMAKER_BASE_DIR override there).
_IMAGE_PATHS = training_paths(environ={})
CHECKPOINT_LOCAL_PATH = str(_IMAGE_PATHS.checkpoint_dir)  # synced with checkpoint_s3_uri
TENSORBOARD_LOCAL_PATH = str(_IMAGE_PATHS.tensorboard_dir)  # TensorBoardOutputConfig.LocalPath
# File: each host downloads its channels before the job starts; FastFile streams each file
# from S3 when the job first reads it (no wait, and a host reads only the files it decodes).
INPUT_MODES = ("File", "FastFile")
TUNE_JOB_BASE = "imgcls-tune"
TRAIN_JOB_BASE = "imgcls-train"
DEFAULT_INSTANCE = "ml.g4dn.xlarge"  # one T4 GPU
DEFAULT_MAX_RUN_S = 24 * 3600


@dataclass(frozen=True)
class JobSettings:
    """What every training job needs, for `tune` and `train` alike."""

    image_uri: str
    role: str
    instance_type: str = DEFAULT_INSTANCE
    max_run_s: int = DEFAULT_MAX_RUN_S
    spot: bool = False
    max_wait_s: int | None = None  # spot only: at least max_run_s
    hyperparameters: dict[str, str] = field(default_factory=dict)
    # Every host runs one worker per GPU; the channels reach every host whole
    # (FullyReplicated): the job needs every file's label on every host.
    instance_count: int = 1
    input_mode: str = INPUT_MODES[0]


@dataclass(frozen=True)
class EstimatorPlan:
    """An Estimator of the training image for one job (or tuning job) name, as plain data."""

    settings: JobSettings
    name: str  # the job's (or tuning job's) name; spot checkpoints are kept under it
    inputs: dict[str, str]  # channel name -> S3 prefix (or file:// folder)
    output_path: str
    checkpoint_uri: str  # spot only: synced with the image's checkpoint folder

    @property
    def max_wait_s(self) -> int:
        return max(self.settings.max_wait_s or self.settings.max_run_s, self.settings.max_run_s)


def estimator_plan(
    target: AwsTarget, settings: JobSettings, name: str, data_uri: str | None
) -> EstimatorPlan:
    return EstimatorPlan(
        settings=settings,
        name=name,
        inputs=channel_inputs(target, data_uri),
        output_path=target.s3_uri("output"),
        checkpoint_uri=target.s3_uri("checkpoints", name),
    )


def channel_inputs(target: AwsTarget, data_uri: str | None) -> dict[str, str]:
    """Channel name -> S3 prefix, for the channels that hold objects; train and valid required."""
    data_uri = (data_uri or target.data_uri).rstrip("/")
    if data_uri.startswith("file://"):
        return local_channel_inputs(data_uri)
    bucket, prefix = split_s3_uri(data_uri)
    s3 = target.session.client("s3")
    inputs = {}
    for channel in IMAGE_CHANNELS:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{channel}/", MaxKeys=1)
        if listed.get("KeyCount", 0):
            inputs[channel] = f"{data_uri}/{channel}/"
    missing = [channel for channel in REQUIRED_CHANNELS if channel not in inputs]
    if missing:
        raise CloudError(
            f"no {' or '.join(missing)} channel under {data_uri}/: "
            "run `cloud.py upload --data DIR` first or pass --data-uri"
        )
    return inputs


def local_channel_inputs(data_uri: str) -> dict[str, str]:
    root = Path(data_uri.removeprefix("file://"))
    inputs = {
        channel: f"file://{root / channel}"
        for channel in IMAGE_CHANNELS
        if (root / channel).is_dir()
    }
    if not all(channel in inputs for channel in REQUIRED_CHANNELS):
        raise CloudError(f"{root} needs train/ and valid/ ImageFolders")
    return inputs


def require_docker(local: str | None) -> None:
    if local and shutil.which("docker") is None:
        raise CloudError("--local needs Docker with docker compose (SageMaker local mode)")


# ---------------------------------------------------------------------------------------- tune


@dataclass(frozen=True)
class TuningSettings:
    objective: str = DEFAULT_OBJECTIVE  # a key of launch.search_space.OBJECTIVES
    max_jobs: int = 8
    max_parallel_jobs: int = 2
    early_stopping: bool = True


@dataclass(frozen=True)
class TuningJobPlan:
    """A Bayesian tuning job over launch.search_space, as plain data."""

    estimator: EstimatorPlan
    settings: TuningSettings

    @property
    def objective(self) -> Objective:
        return OBJECTIVES[self.settings.objective]


def best_hyperparameters(sagemaker_client: Any, tuning_job: str) -> dict[str, Any]:
    """The best job of a finished tuning job: its name, objective value and hyperparameters.

    The hyperparameters are the tuning job's static ones overlaid with the best job's tuned
    ones: everything `train` needs to repeat that job.
    """
    described = sagemaker_client.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuning_job
    )
    best = described.get("BestTrainingJob")
    if not best:
        status = described["HyperParameterTuningJobStatus"]
        raise CloudError(f"tuning job {tuning_job} has no best training job yet ({status})")
    static = described.get("TrainingJobDefinition", {}).get("StaticHyperParameters", {})
    merged = {**static, **best.get("TunedHyperParameters", {})}
    objective = best.get("FinalHyperParameterTuningJobObjectiveMetric", {})
    return {
        "tuning_job": tuning_job,
        "training_job": best["TrainingJobName"],
        "objective": {"metric": objective.get("MetricName"), "value": objective.get("Value")},
        "hyperparameters": {
            key: str(value).strip('"')
            for key, value in without_trial_settings(merged).items()
            if not is_platform_key(key)
        },
    }


def wait_for_tuning_job(sagemaker_client: Any, name: str, poll_s: int = 60) -> str:
    """Poll until the tuning job ends, printing its job counts when they change."""
    last = None
    while True:
        described = sagemaker_client.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name
        )
        status = described["HyperParameterTuningJobStatus"]
        counts = described.get("TrainingJobStatusCounters", {})
        line = f"{status}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        if line != last:
            print(line, flush=True)
            last = line
        if status in ("Completed", "Failed", "Stopped"):
            return str(status)
        time.sleep(poll_s)


def save_best(best: dict[str, Any], output: Path) -> None:
    """Print the best job and its hyperparameters, and save them for `train --hyperparameters`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(best, indent=2) + "\n")
    objective = best["objective"]
    print(f"best training job {best['training_job']}: {objective['metric']}={objective['value']}")
    for key, value in sorted(best["hyperparameters"].items()):
        print(f"  {key}={value}")
    print(f"saved to {shown_path(output)}")


# --------------------------------------------------------------------------------------- train


@dataclass(frozen=True)
class DebuggerSettings:
    save_interval: int = 10  # steps between saved tensors
    system_monitor_interval_ms: int = 500


@dataclass(frozen=True)
class Monitoring:
    """What a job sends beside its metrics: TensorBoard scalars always, and SageMaker
    Debugger's hook, rules and profiler unless `debugger` is None (Debugger is closed to
    new AWS customers)."""

    tensorboard_uri: str
    debugger: DebuggerSettings | None
    debugger_uri: str
    profiler_uri: str
    tensorboard_local_path: str = TENSORBOARD_LOCAL_PATH


def monitoring(target: AwsTarget, name: str, debugger: DebuggerSettings | None) -> Monitoring:
    return Monitoring(
        tensorboard_uri=target.s3_uri("tensorboard", name),
        debugger=debugger,
        debugger_uri=target.s3_uri("debugger"),
        profiler_uri=target.s3_uri("profiler"),
    )


@dataclass(frozen=True)
class TrainingJobPlan:
    """One training job, as plain data; `monitoring` None in local mode (plain `docker
    run`: no Debugger rules, profiler or checkpoint sync)."""

    estimator: EstimatorPlan
    monitoring: Monitoring | None

    @property
    def name(self) -> str:
        return self.estimator.name


def read_hyperparameters_file(json_file: Path) -> dict[str, str]:
    """Hyperparameters from a JSON file: `tune`'s output, or a flat object."""
    try:
        loaded = json.loads(json_file.read_text())
    except (OSError, ValueError) as error:
        raise CloudError(f"cannot read hyperparameters from {json_file}: {error}") from None
    loaded = loaded.get("hyperparameters", loaded) if isinstance(loaded, dict) else None
    if not isinstance(loaded, dict):
        raise CloudError(f"{json_file} holds no hyperparameters object")
    return {str(key): str(value) for key, value in loaded.items()}


def print_training_job(plan: TrainingJobPlan) -> None:
    settings = plan.estimator.settings
    hosts = f"{settings.instance_count} x " if settings.instance_count > 1 else ""
    print(
        f"training job {plan.name} on {hosts}{settings.instance_type}"
        + (" (spot)" if settings.spot else "")
    )
    for key, value in sorted(settings.hyperparameters.items()):
        print(f"  {key}={value}")
