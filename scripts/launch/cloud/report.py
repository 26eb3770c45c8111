"""`report`: a training job's loss curves, and what Debugger's rules said.

The curves come from the first source the job has, and the report says which:
1. the losses its Debugger hook saved (per step, read with smdebug);
2. its TensorBoard scalars (per epoch; every job writes them, with or without Debugger:
   SageMaker uploads them through TensorBoardOutputConfig);
3. its `metrics.json` (per epoch; in the job's output.tar.gz on SageMaker).
Sources are a SageMaker job (S3) or a local job directory (`scripts/local.py train`; for a
multi-host run, the leader's OUT/algo-1). Lists the Debugger and profiler rules' verdicts
and points to the profiler report. The job's end-of-job evaluation (from output/data, or
its output.tar.gz) is copied beside the loss plot and its per-class table printed.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch.cloud.settings import CloudError, shown_path, split_s3_uri
from launch.evaluation import print_evaluation
from trainer.contract import TrainingPaths
from trainer.evaluation import OUTPUT_FILES

LOCAL_HOOK_CONFIG = Path("input") / "config" / "debughookconfig.json"
LOCAL_TENSORS = Path("output") / "tensors"  # the hook's default LocalPath under the job dir
METRICS_FILE = "metrics.json"
OUTPUT_ARCHIVE = "output.tar.gz"  # SageMaker's archive of <base>/output/data
DEBUGGER, TENSORBOARD, METRICS = "Debugger tensors", "TensorBoard events", METRICS_FILE


@dataclass
class JobDebugInfo:
    """Where a job's loss curves may be (each a local path or an s3:// URI, or None) and
    what its rules said."""

    tensors: str | None  # Debugger's output folder
    tensorboard: str | None = None  # the folder of the job's TensorBoard event files
    metrics: str | None = None  # metrics.json, or (s3) the output.tar.gz holding it
    rules: list[tuple[str, str, str]] = field(default_factory=list)  # name, status, details
    profiler_report: str | None = None
    console_url: str | None = None


@dataclass
class LossCurves:
    """Loss values per step (or epoch), per loss tensor, for the TRAIN and EVAL modes."""

    train: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    eval: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    unit: str = "step"  # what the x values count: "step" (Debugger) or "epoch"

    def is_empty(self) -> bool:
        return not (self.train or self.eval)


def local_job_info(job_dir: Path) -> JobDebugInfo:
    """A local job: the hook config's LocalPath when it exists, else <job>/output/tensors;
    its TensorBoard folder and metrics.json. A multi-host job's leader is OUT/algo-1."""
    if not (job_dir / "output").is_dir() and (job_dir / "algo-1" / "output").is_dir():
        job_dir = job_dir / "algo-1"
    config_path = job_dir / LOCAL_HOOK_CONFIG
    tensors = job_dir / LOCAL_TENSORS
    if config_path.is_file():
        configured = json.loads(config_path.read_text()).get("LocalPath")
        if configured and Path(configured).is_dir():
            tensors = Path(configured)
    paths = TrainingPaths(job_dir)
    return JobDebugInfo(
        tensors=str(tensors),
        tensorboard=str(paths.tensorboard_dir),
        metrics=str(paths.output_data_dir / METRICS_FILE),
    )


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
    tensorboard = described.get("TensorBoardOutputConfig")
    model = described.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
    return JobDebugInfo(
        tensors=f"{hook['S3OutputPath'].rstrip('/')}/{job}/debug-output" if hook else None,
        tensorboard=tensorboard["S3OutputPath"].rstrip("/") if tensorboard else None,
        metrics=f"{model.rsplit('/', 1)[0]}/{OUTPUT_ARCHIVE}" if model else None,
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

    bucket, key = split_s3_uri(tensors)
    listed = boto3.client("s3").list_objects_v2(
        Bucket=bucket, Prefix=f"{key.rstrip('/')}/collections/", MaxKeys=1
    )
    return bool(listed.get("KeyCount", 0))


def read_losses(tensors: str) -> LossCurves:
    """Every tensor of the `losses` collection, per step, in TRAIN and EVAL mode.

    Only where `has_collections(tensors)`: smdebug would wait for the collections forever.
    """
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "error")  # smdebug logs each file it reads
    from smdebug import modes  # noqa: PLC0415
    from smdebug.trials import create_trial  # noqa: PLC0415

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


def read_tensorboard(location: str) -> LossCurves:
    """The `*/loss` scalars of a folder of event files (downloaded first from S3)."""
    if location.startswith("s3://"):
        with tempfile.TemporaryDirectory() as folder:
            if not _download_prefix(location, Path(folder), "tfevents"):
                return LossCurves(unit="epoch")
            return read_tensorboard(folder)
    if not Path(location).is_dir():
        return LossCurves(unit="epoch")
    from tensorboard.backend.event_processing.event_accumulator import (  # noqa: PLC0415
        EventAccumulator,
    )

    events = EventAccumulator(location)
    events.Reload()
    curves = LossCurves(unit="epoch")
    for tag in events.Tags()["scalars"]:
        split, _, name = tag.partition("/")
        if name == "loss":
            scalars = events.Scalars(tag)
            curve = curves.train if split == "train" else curves.eval
            curve[split] = ([s.step for s in scalars], [s.value for s in scalars])
    return curves


def read_metrics_file(location: str) -> LossCurves:
    """train/valid loss per epoch from metrics.json (on S3: inside output.tar.gz)."""
    text = _read_metrics_text(location)
    if text is None:
        return LossCurves(unit="epoch")
    rows = json.loads(text)
    epochs = [int(row["epoch"]) for row in rows]
    return LossCurves(
        train={"train": (epochs, [row["train_loss"] for row in rows])},
        eval={"valid": (epochs, [row["valid_loss"] for row in rows])},
        unit="epoch",
    )


def _read_metrics_text(location: str) -> str | None:
    found = read_output_files(location, [METRICS_FILE])
    return found[METRICS_FILE].decode() if METRICS_FILE in found else None


def read_output_files(metrics_location: str, names: list[str]) -> dict[str, bytes]:
    """Those of the job's output data files `names` that exist, from the folder of its
    metrics.json, or (s3) from the output.tar.gz at `metrics_location`."""
    if not metrics_location.startswith("s3://"):
        folder = Path(metrics_location).parent
        return {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}
    import boto3  # noqa: PLC0415

    bucket, key = split_s3_uri(metrics_location)
    s3 = boto3.client("s3")
    try:
        archive = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return {}
    found = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as members:
        for member in members.getmembers():
            name = Path(member.name).name
            if name in names and (handle := members.extractfile(member)):
                found[name] = handle.read()
    return found


def save_evaluation(info: JobDebugInfo, folder: Path, prefix: str) -> dict[str, Path]:
    """The job's evaluation files, written into `folder` as PREFIX-NAME; by name."""
    found = read_output_files(info.metrics, list(OUTPUT_FILES)) if info.metrics else {}
    saved = {}
    for name, content in found.items():
        saved[name] = folder / f"{prefix}-{name}"
        saved[name].parent.mkdir(parents=True, exist_ok=True)
        saved[name].write_bytes(content)
    return saved


def _download_prefix(location: str, folder: Path, containing: str) -> int:
    """Download the objects under an s3:// prefix whose names contain `containing`."""
    import boto3  # noqa: PLC0415

    bucket, prefix = split_s3_uri(location)
    s3 = boto3.client("s3")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            name = Path(item["Key"]).name
            if containing in name:
                s3.download_file(bucket, item["Key"], str(folder / name))
                count += 1
    return count


def read_curves(info: JobDebugInfo) -> tuple[str, str, LossCurves]:
    """(source, its location, curves) from the first source that has losses."""
    problems = []
    if info.tensors:
        if has_collections(info.tensors):
            return DEBUGGER, info.tensors, read_losses(info.tensors)
        problems.append(f"no Debugger output under {info.tensors}")
    if info.tensorboard:
        curves = read_tensorboard(info.tensorboard)
        if not curves.is_empty():
            return TENSORBOARD, info.tensorboard, curves
        problems.append(f"no TensorBoard losses under {info.tensorboard}")
    if info.metrics:
        curves = read_metrics_file(info.metrics)
        if not curves.is_empty():
            return METRICS, info.metrics, curves
        problems.append(f"no {METRICS_FILE} at {info.metrics}")
    raise CloudError("; ".join(problems) + " (yet: is the job still starting?)")


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
        axis.set(title=f"{mode} loss", xlabel=f"{mode} {curves.unit}", ylabel="cross-entropy loss")
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
                f"{mode:5} {name}: {len(steps)} {curves.unit}s, "
                f"first {values[0]:.4f}, last {values[-1]:.4f}, min {min(values):.4f}"
            )
    return lines


def report(job: str, info: JobDebugInfo, png: Path) -> LossCurves:
    """Print the report for one job and write its loss plot."""
    source, location, curves = read_curves(info)
    plot_losses(curves, f"{job} ({source})", png)
    shown = location if location.startswith("s3://") else shown_path(Path(location))
    print(f"loss curves from {source}: {shown}")
    if source == DEBUGGER:
        print(f"debugger output: {shown}")
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
    print_evaluation(save_evaluation(info, png.parent, job))
    return curves
