"""`tune` and `train`: SageMaker jobs around the training image.

The search space, the objective and the metric regexes come from the training code
(`trainer.search_space`, `trainer.metrics`), so the tuner reads exactly the lines the job
prints and searches exactly the ranges local tuning searches.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch.cloud.settings import (
    AwsTarget,
    CloudError,
    shown_path,
    split_s3_uri,
    unique_name,
)
from trainer.contract import (
    DEFAULT_BASE_DIR,
    IMAGE_CHANNELS,
    REQUIRED_CHANNELS,
    TrainingPaths,
    is_platform_key,
)
from trainer.metrics import METRIC_DEFINITIONS
from trainer.search_space import (
    OBJECTIVES,
    SEARCH_SPACE,
    Choice,
    FloatRange,
    trial_hyperparameters,
    without_trial_settings,
)

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"  # where the training image keeps checkpoints
# Where the training image writes its TensorBoard scalars (TensorBoardOutputConfig.LocalPath).
TENSORBOARD_LOCAL_PATH = str(TrainingPaths(Path(DEFAULT_BASE_DIR)).tensorboard_dir)
# File: each host downloads its channels before the job starts; FastFile streams each file
# from S3 when the job first reads it (no wait, and a host reads only the files it decodes).
INPUT_MODES = ("File", "FastFile")
TUNE_JOB_BASE = "imgcls-tune"
TRAIN_JOB_BASE = "imgcls-train"


@dataclass(frozen=True)
class JobSettings:
    """What every training job needs, for `tune` and `train` alike."""

    image_uri: str
    role: str
    instance_type: str
    max_run_s: int = 24 * 3600
    spot: bool = False
    max_wait_s: int | None = None  # spot only: at least max_run_s
    hyperparameters: dict[str, str] = field(default_factory=dict)
    # Every host runs one worker per GPU; the channels reach every host whole
    # (FullyReplicated): the job needs every file's label on every host.
    instance_count: int = 1
    input_mode: str = "File"


def replace_hyperparameters(settings: JobSettings, hyperparameters: dict[str, str]) -> JobSettings:
    return dataclasses.replace(settings, hyperparameters=hyperparameters)


def tuning_ranges() -> dict[Any, Any]:
    """trainer.search_space as SDK parameter ranges."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter  # noqa: PLC0415

    ranges: dict[Any, Any] = {}
    for name, space in SEARCH_SPACE.items():
        if isinstance(space, FloatRange):
            scaling = "Logarithmic" if space.log else "Linear"
            ranges[name] = ContinuousParameter(space.low, space.high, scaling_type=scaling)
        elif isinstance(space, Choice):
            ranges[name] = CategoricalParameter([str(value) for value in space.values])
        else:
            raise TypeError(f"unsupported search space entry {name}: {space!r}")
    return ranges


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


def channel_sources(inputs: dict[str, str], input_mode: str) -> dict[str, Any]:
    """The channels as the estimator takes them: plain URIs, or TrainingInputs for FastFile."""
    if input_mode == "File" or next(iter(inputs.values()), "").startswith("file://"):
        return dict(inputs)
    from sagemaker.inputs import TrainingInput  # noqa: PLC0415

    return {name: TrainingInput(uri, input_mode=input_mode) for name, uri in inputs.items()}


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


def make_estimator(
    target: AwsTarget, session: Any, settings: JobSettings, name: str, **extra: Any
) -> Any:
    """A generic Estimator running the training image, reading the project's metric lines.

    `name` is the job's (or the tuning job's) name; spot checkpoints are kept under it.
    """
    from sagemaker.estimator import Estimator  # noqa: PLC0415

    spot: dict[str, Any] = {}
    if settings.spot:
        spot = {
            "use_spot_instances": True,
            "max_wait": max(settings.max_wait_s or settings.max_run_s, settings.max_run_s),
            # Spot jobs can be interrupted: the image resumes from these synced checkpoints.
            "checkpoint_s3_uri": target.s3_uri("checkpoints", name),
            "checkpoint_local_path": CHECKPOINT_LOCAL_PATH,
        }
    return Estimator(
        image_uri=settings.image_uri,
        role=settings.role,
        instance_count=settings.instance_count,
        instance_type=settings.instance_type,
        max_run=settings.max_run_s,
        output_path=target.s3_uri("output"),
        base_job_name=TRAIN_JOB_BASE,
        hyperparameters=dict[str, Any](settings.hyperparameters),
        metric_definitions=METRIC_DEFINITIONS,
        sagemaker_session=session,
        **spot,
        **extra,
    )


# ---------------------------------------------------------------------------------------- tune


@dataclass(frozen=True)
class TuningSettings:
    objective: str = "valid_accuracy"  # a key of trainer.search_space.OBJECTIVES
    max_jobs: int = 8
    max_parallel_jobs: int = 2
    early_stopping: bool = True


def make_tuner(estimator: Any, tuning: TuningSettings) -> Any:
    from sagemaker.tuner import HyperparameterTuner  # noqa: PLC0415

    objective = OBJECTIVES[tuning.objective]
    return HyperparameterTuner(
        estimator,
        objective_metric_name=objective.metric,
        objective_type=objective.direction,
        hyperparameter_ranges=tuning_ranges(),
        metric_definitions=METRIC_DEFINITIONS,
        strategy="Bayesian",
        max_jobs=tuning.max_jobs,
        max_parallel_jobs=tuning.max_parallel_jobs,
        early_stopping_type="Auto" if tuning.early_stopping else "Off",
        base_tuning_job_name=TUNE_JOB_BASE,
    )


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


def tune(
    target: AwsTarget,
    session: Any,
    settings: JobSettings,
    tuning: TuningSettings,
    data_uri: str | None,
    wait: bool,
    output: Path,
) -> dict[str, Any] | None:
    """Start a tuning job; when waiting, print and save its best job's hyperparameters."""
    inputs = channel_inputs(target, data_uri)
    name = unique_name(TUNE_JOB_BASE)
    trials = replace_hyperparameters(settings, trial_hyperparameters(settings.hyperparameters))
    tuner = make_tuner(make_estimator(target, session, trials, name), tuning)
    tuner.fit(inputs=channel_sources(inputs, settings.input_mode), job_name=name, wait=False)
    print(f"tuning job {name}: {tuning.max_jobs} jobs, {tuning.max_parallel_jobs} in parallel")
    for channel, uri in inputs.items():
        print(f"  {channel:5} {uri}")
    if not wait:
        print(f"when it has finished: python scripts/cloud.py train --tuning-job {name}")
        return None
    status = wait_for_tuning_job(session.sagemaker_client, name)
    if status != "Completed":
        raise CloudError(f"tuning job {name} ended {status}")
    best = best_hyperparameters(session.sagemaker_client, name)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(best, indent=2) + "\n")
    objective = best["objective"]
    print(f"best training job {best['training_job']}: {objective['metric']}={objective['value']}")
    for key, value in sorted(best["hyperparameters"].items()):
        print(f"  {key}={value}")
    print(f"saved to {shown_path(output)}")
    return best


# --------------------------------------------------------------------------------------- train


@dataclass(frozen=True)
class DebuggerSettings:
    save_interval: int = 10  # steps between saved tensors
    system_monitor_interval_ms: int = 500


def load_hyperparameters(
    sagemaker_client: Any, tuning_job: str | None, json_file: Path | None
) -> dict[str, str]:
    """Hyperparameters from a tuning job's best job or from a JSON file (`tune`'s or flat)."""
    if tuning_job:
        return best_hyperparameters(sagemaker_client, tuning_job)["hyperparameters"]
    if json_file is None:
        return {}
    try:
        loaded = json.loads(json_file.read_text())
    except (OSError, ValueError) as error:
        raise CloudError(f"cannot read hyperparameters from {json_file}: {error}") from None
    loaded = loaded.get("hyperparameters", loaded) if isinstance(loaded, dict) else None
    if not isinstance(loaded, dict):
        raise CloudError(f"{json_file} holds no hyperparameters object")
    return {str(key): str(value) for key, value in loaded.items()}


def with_losses_interval(rule: dict[str, Any], interval: dict[str, Any]) -> dict[str, Any]:
    """A built-in rule config whose `losses` collection uses the hook's save interval.

    The loss rules ask for `losses` every 500 steps; the SDK would send that next to the
    hook's own `losses` entry, two configurations of one collection.
    """
    for collection in rule.get("CollectionConfigurations", []):
        if collection["CollectionName"] == "losses":
            collection["CollectionParameters"] = {**collection["CollectionParameters"], **interval}
    return rule


def debugger_settings(target: AwsTarget, debugger: DebuggerSettings) -> dict[str, Any]:
    """Debugger hook (losses), the five training rules, and system profiling with its report."""
    from sagemaker.debugger import (  # noqa: PLC0415
        CollectionConfig,
        DebuggerHookConfig,
        ProfilerConfig,
        ProfilerRule,
        Rule,
        rule_configs,
    )

    interval: dict[str, Any] = {"save_interval": str(debugger.save_interval)}
    rules = [
        with_losses_interval(rule, interval)
        for rule in (
            rule_configs.loss_not_decreasing(),
            rule_configs.overfit(),
            rule_configs.overtraining(),
            rule_configs.vanishing_gradient(),
            rule_configs.poor_weight_initialization(),
        )
    ]
    return {
        "debugger_hook_config": DebuggerHookConfig(
            s3_output_path=target.s3_uri("debugger"),
            hook_parameters=interval,
            collection_configs=[CollectionConfig(name="losses", parameters=interval)],
        ),
        "rules": [Rule.sagemaker(rule) for rule in rules]
        + [ProfilerRule.sagemaker(rule_configs.ProfilerReport())],
        # Framework profiling is deprecated from PyTorch 2.0; system monitoring needs no code.
        "profiler_config": ProfilerConfig(
            s3_output_path=target.s3_uri("profiler"),
            system_monitor_interval_millis=debugger.system_monitor_interval_ms,
        ),
    }


def monitoring_settings(
    target: AwsTarget, name: str, debugger: DebuggerSettings | None
) -> dict[str, Any]:
    """TensorBoard output always (the image writes its scalars there), plus Debugger's hook,
    rules and profiler, unless `debugger` is None: SageMaker Debugger is closed to new AWS
    customers, so without it the job sends neither hook nor rules, and disables the
    profiler (the SDK still sends `ProfilerConfig: {DisableProfiler: true}`)."""
    from sagemaker.debugger import TensorBoardOutputConfig  # noqa: PLC0415

    tensorboard = TensorBoardOutputConfig(
        s3_output_path=target.s3_uri("tensorboard", name),
        container_local_output_path=TENSORBOARD_LOCAL_PATH,
    )
    if debugger is None:
        return {
            "debugger_hook_config": False,
            "disable_profiler": True,
            "tensorboard_output_config": tensorboard,
        }
    return {**debugger_settings(target, debugger), "tensorboard_output_config": tensorboard}


def wait_for_training_job(estimator: Any) -> None:
    """Stream the job's CloudWatch log until it ends; a failed job becomes a CloudError."""
    from sagemaker.exceptions import UnexpectedStatusException  # noqa: PLC0415

    try:
        estimator.latest_training_job.wait(logs="All")
    except UnexpectedStatusException as error:
        raise CloudError(str(error).splitlines()[0]) from None
    print()  # the SDK's progress dots end without a newline


def train(
    target: AwsTarget,
    session: Any,
    settings: JobSettings,
    debugger: DebuggerSettings | None,
    data_uri: str | None,
    wait: bool,
    local: str | None = None,
) -> str:
    """Start (and by default wait for) one training job. Returns its name.

    `debugger` None: no SageMaker Debugger (hook, rules, profiler); TensorBoard only."""
    inputs = channel_inputs(target, data_uri)
    name = unique_name(TRAIN_JOB_BASE)
    # Local mode runs plain `docker run`: no Debugger rules, profiler or checkpoint sync.
    extra = {} if local else monitoring_settings(target, name, debugger)
    estimator = make_estimator(target, session, settings, name, **extra)
    estimator.fit(inputs=channel_sources(inputs, settings.input_mode), job_name=name, wait=False)
    hosts = f"{settings.instance_count} x " if settings.instance_count > 1 else ""
    print(
        f"training job {name} on {hosts}{settings.instance_type}"
        + (" (spot)" if settings.spot else "")
    )
    for key, value in sorted(settings.hyperparameters.items()):
        print(f"  {key}={value}")
    if wait:
        wait_for_training_job(estimator)
    described = session.sagemaker_client.describe_training_job(TrainingJobName=name)
    print(f"status: {described['TrainingJobStatus']}")
    if described["TrainingJobStatus"] == "Completed":
        print(f"model: {described['ModelArtifacts']['S3ModelArtifacts']}")
    if not local and debugger is not None:
        print(f"debugger output: {estimator.latest_job_debugger_artifacts_path()}")
    if not local:
        print(f"tensorboard output: {target.s3_uri('tensorboard', name)}")
    print(f"next: python scripts/cloud.py report --job {name}")
    print(f"      python scripts/cloud.py deploy --job {name}")
    return name
