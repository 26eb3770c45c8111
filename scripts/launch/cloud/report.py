"""`report`: what Debugger saw during a training job.

Reads the losses the job's Debugger hook saved (from S3 for a SageMaker job, or from a
local job directory written by `scripts/local.py train`) with smdebug, plots training and
evaluation loss per step to a PNG, lists the Debugger and profiler rules' verdicts, and
points to the profiler report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch.cloud.settings import CloudError, shown_path

LOCAL_HOOK_CONFIG = Path("input") / "config" / "debughookconfig.json"
LOCAL_TENSORS = Path("output") / "tensors"  # the hook's default LocalPath under the job dir


@dataclass
class JobDebugInfo:
    """Where a job's Debugger output lives and what its rules said."""

    tensors: str  # a local folder or an s3:// URI
    rules: list[tuple[str, str, str]] = field(default_factory=list)  # name, status, details
    profiler_report: str | None = None
    console_url: str | None = None


@dataclass
class LossCurves:
    """Loss values per step, per loss tensor, for the TRAIN and EVAL modes."""

    train: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    eval: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.train or self.eval)


def local_job_info(job_dir: Path) -> JobDebugInfo:
    """A local job: the hook config's LocalPath when it exists, else <job>/output/tensors."""
    config_path = job_dir / LOCAL_HOOK_CONFIG
    tensors = job_dir / LOCAL_TENSORS
    if config_path.is_file():
        configured = json.loads(config_path.read_text()).get("LocalPath")
        if configured and Path(configured).is_dir():
            tensors = Path(configured)
    return JobDebugInfo(tensors=str(tensors))


def rule_statuses(described: dict[str, Any]) -> list[tuple[str, str, str]]:
    statuses = described.get("DebugRuleEvaluationStatuses", []) + described.get(
        "ProfilerRuleEvaluationStatuses", []
    )
    return [
        (
            status["RuleConfigurationName"],
            status.get("RuleEvaluationStatus", "?"),
            status.get("StatusDetails", ""),
        )
        for status in statuses
    ]


def profiler_report_uri(described: dict[str, Any]) -> str | None:
    """Where the ProfilerReport rule writes its HTML report (under the job's rule output)."""
    names = [
        config["RuleConfigurationName"]
        for config in described.get("ProfilerRuleConfigurations", [])
        if config["RuleConfigurationName"].startswith("ProfilerReport")
    ]
    if not names:
        return None
    output = described["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    job = described["TrainingJobName"]
    return f"{output}/{job}/rule-output/{names[0]}/profiler-output/profiler-report.html"


def sagemaker_job_info(sagemaker_client: Any, region: str, job: str) -> JobDebugInfo:
    try:
        described = sagemaker_client.describe_training_job(TrainingJobName=job)
    except Exception as error:  # botocore ClientError, without importing botocore here
        raise CloudError(f"training job {job} not found: {error}") from None
    hook = described.get("DebugHookConfig")
    if not hook:
        raise CloudError(f"training job {job} ran without a Debugger hook: nothing to report")
    return JobDebugInfo(
        tensors=f"{hook['S3OutputPath'].rstrip('/')}/{job}/debug-output",
        rules=rule_statuses(described),
        profiler_report=profiler_report_uri(described),
        console_url=(
            f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job}"
        ),
    )


def has_collections(tensors: str) -> bool:
    """Whether the hook has written its collections file, which smdebug would wait for forever."""
    if not tensors.startswith("s3://"):
        return any(path.is_file() for path in (Path(tensors) / "collections").rglob("*"))
    import boto3  # noqa: PLC0415

    bucket, _, key = tensors.removeprefix("s3://").partition("/")
    listed = boto3.client("s3").list_objects_v2(
        Bucket=bucket, Prefix=f"{key.rstrip('/')}/collections/", MaxKeys=1
    )
    return bool(listed.get("KeyCount", 0))


def read_losses(tensors: str) -> LossCurves:
    """Every tensor of the `losses` collection, per step, in TRAIN and EVAL mode."""
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "error")  # smdebug logs each file it reads
    from smdebug import modes  # noqa: PLC0415
    from smdebug.trials import create_trial  # noqa: PLC0415

    if not has_collections(tensors):
        raise CloudError(f"no Debugger output under {tensors} (yet: is the job still starting?)")
    trial = create_trial(tensors)
    curves = LossCurves()
    try:
        names = trial.tensor_names(collection="losses")
    except Exception as error:  # smdebug raises its own errors when nothing is there
        raise CloudError(f"no Debugger losses under {tensors}: {error}") from None
    for name in names:
        tensor = trial.tensor(name)
        for mode, curve in ((modes.TRAIN, curves.train), (modes.EVAL, curves.eval)):
            steps = tensor.steps(mode=mode)
            if steps:
                values = [float(tensor.value(step, mode=mode)) for step in steps]
                curve[name] = (list(steps), values)
    if curves.is_empty():
        raise CloudError(f"no Debugger losses under {tensors}")
    return curves


def plot_losses(curves: LossCurves, title: str, png: Path) -> None:
    """Training and evaluation cross-entropy loss per step, side by side."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (("train", curves.train), ("eval", curves.eval))
    for axis, (mode, curve) in zip(axes, panels, strict=True):
        for name, (steps, values) in curve.items():
            axis.plot(steps, values, marker="." if len(steps) < 50 else None, label=name)
        axis.set(title=f"{mode} loss", xlabel=f"{mode} step", ylabel="cross-entropy loss")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if curve:
            axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)


def summarise(curves: LossCurves) -> list[str]:
    lines = []
    for mode, curve in (("train", curves.train), ("eval", curves.eval)):
        for name, (steps, values) in curve.items():
            lines.append(
                f"{mode:5} {name}: {len(steps)} steps, "
                f"first {values[0]:.4f}, last {values[-1]:.4f}, min {min(values):.4f}"
            )
    return lines


def report(job: str, info: JobDebugInfo, png: Path) -> LossCurves:
    """Print the report for one job and write its loss plot."""
    curves = read_losses(info.tensors)
    plot_losses(curves, job, png)
    tensors = info.tensors if info.tensors.startswith("s3://") else shown_path(Path(info.tensors))
    print(f"debugger output: {tensors}")
    for line in summarise(curves):
        print(line)
    print(f"loss plot: {shown_path(png)}")
    if info.rules:
        print("rules:")
        for name, status, details in info.rules:
            print(f"  {name:32} {status}" + (f"  ({details[:80]})" if details else ""))
    else:
        print("rules: none evaluated (a local job, or the job has no rule statuses yet)")
    if info.profiler_report:
        print(f"profiler report: {info.profiler_report}")
    if info.console_url:
        print(f"console: {info.console_url}")
    return curves
