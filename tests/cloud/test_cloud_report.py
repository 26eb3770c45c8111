"""`report` on the Debugger output of a real local training job, from disk and from S3."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from launch.cloud import cli as cloud
from launch.cloud.report import profiler_report_uri, rule_statuses
from launch.synthetic_images import make_dataset
from support.aws_emulator import emulator_env, moto_server
from support.jobs import train_tiny, write_debug_hook_config
from trainer.evaluation import EVALUATION_FILE, OUTPUT_FILES, format_class_table
from trainer.metrics import parse_metrics

pytestmark = pytest.mark.contract

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BUCKET = "report-tests"


class TrainedJob:
    def __init__(self, job_dir: Path, tensors: Path, metrics: dict[str, list[float]]) -> None:
        self.job_dir = job_dir
        self.tensors = tensors
        self.metrics = metrics


@pytest.fixture(scope="module")
def trained_job(tmp_path_factory: pytest.TempPathFactory) -> TrainedJob:
    """Two epochs of the real `train` command with a hook saving the losses every step.

    16 images per channel and batch_size 16: one step per epoch, so each saved training
    loss is the epoch's logged train_loss, and the eval steps are valid, valid, test.
    """
    root = tmp_path_factory.mktemp("report")
    data = make_dataset(root / "data", per_class=8)
    job_dir = root / "job"
    tensors = write_debug_hook_config(job_dir)
    completed = train_tiny(data, job_dir, batch_size="16")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return TrainedJob(job_dir, tensors, parse_metrics(completed.stdout + completed.stderr))


def loss_line(out: str, mode: str) -> tuple[int, float, float]:
    """(steps, first, last) from the report line of one mode."""
    match = re.search(rf"^{mode} +\S+: (\d+) steps, first (\S+), last (\S+),", out, re.M)
    assert match, out
    return int(match[1]), float(match[2]), float(match[3])


def test_report_on_a_local_job_plots_train_and_eval_loss(
    trained_job: TrainedJob, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    png = tmp_path / "loss.png"
    code = cloud.main(["report", "--job", str(trained_job.job_dir), "--plot", str(png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = trained_job.metrics
    assert loss_line(out, "train") == (2, *(round(v, 4) for v in metrics["train:loss"]))
    assert loss_line(out, "eval") == (
        3,
        round(metrics["valid:loss"][0], 4),
        round(metrics["test:loss"][0], 4),
    )
    assert f"debugger output: {trained_job.tensors}" in out
    assert "rules: none evaluated" in out
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert png.stat().st_size > 10_000
    assert_evaluation_beside(
        png, trained_job.job_dir.name, trained_job.job_dir / "output" / "data", out
    )


def assert_evaluation_beside(png: Path, job: str, output_data: Path, out: str) -> None:
    """The job's evaluation files are copied beside the loss plot and its table printed."""
    for name in OUTPUT_FILES:
        copied = png.parent / f"{job}-{name}"
        assert copied.read_bytes() == (output_data / name).read_bytes(), name
    table = format_class_table(json.loads((output_data / EVALUATION_FILE).read_text()))
    assert table in out


def test_report_without_losses_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "job" / "output" / "tensors").mkdir(parents=True)
    code = cloud.main(["report", "--job", str(tmp_path / "job"), "--plot", str(tmp_path / "p.png")])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("error: no Debugger output under")
    assert err.count("\n") == 1


def create_training_job(sagemaker: Any, job: str, **config: Any) -> None:
    """A training job record in the emulator, as SageMaker keeps one; `config` adds to it."""
    sagemaker.create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": "img:1", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        **config,
    )


@pytest.fixture
def aws_with_job(
    trained_job: TrainedJob, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """A SageMaker training job in moto whose Debugger output is the local job's tensors."""
    with moto_server() as endpoint:
        for key, value in emulator_env(endpoint).items():
            monkeypatch.setenv(key, value)
        job = "imgcls-train-report"
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        prefix = f"debugger/{job}/debug-output"
        for path in sorted(p for p in trained_job.tensors.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(trained_job.tensors).as_posix()}"
            s3.upload_file(str(path), BUCKET, key)
        create_training_job(
            boto3.client("sagemaker"),
            job,
            DebugHookConfig={
                "S3OutputPath": f"s3://{BUCKET}/debugger",
                "CollectionConfigurations": [{"CollectionName": "losses"}],
            },
        )
        yield job, f"s3://{BUCKET}/{prefix}"


def test_report_on_a_sagemaker_job_reads_its_debugger_output_from_s3(
    trained_job: TrainedJob,
    aws_with_job: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    job, uri = aws_with_job
    png = tmp_path / "loss.png"
    code = cloud.main(["report", "--job", job, "--plot", str(png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"debugger output: {uri}" in out
    assert loss_line(out, "train")[0] == 2
    assert loss_line(out, "eval")[0] == 3
    assert "console: https://us-east-1.console.aws.amazon.com/sagemaker/home" in out
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_rule_statuses_and_profiler_report_location() -> None:
    """From a DescribeTrainingJob response as SageMaker returns it (moto keeps no statuses)."""
    described = {
        "TrainingJobName": "imgcls-train-1",
        "OutputDataConfig": {"S3OutputPath": "s3://b/p/output/"},
        "DebugRuleEvaluationStatuses": [
            {"RuleConfigurationName": "LossNotDecreasing", "RuleEvaluationStatus": "NoIssuesFound"},
            {
                "RuleConfigurationName": "Overfit",
                "RuleEvaluationStatus": "IssuesFound",
                "StatusDetails": "RuleEvaluationConditionMet: Evaluation of the rule Overfit",
            },
        ],
        "ProfilerRuleConfigurations": [{"RuleConfigurationName": "ProfilerReport-1700000000"}],
        "ProfilerRuleEvaluationStatuses": [
            {
                "RuleConfigurationName": "ProfilerReport-1700000000",
                "RuleEvaluationStatus": "InProgress",
            }
        ],
    }
    assert rule_statuses(described) == [
        ("LossNotDecreasing", "NoIssuesFound", ""),
        ("Overfit", "IssuesFound", "RuleEvaluationConditionMet: Evaluation of the rule Overfit"),
        ("ProfilerReport-1700000000", "InProgress", ""),
    ]
    assert profiler_report_uri(described) == (
        "s3://b/p/output/imgcls-train-1/rule-output/ProfilerReport-1700000000/"
        "profiler-output/profiler-report.html"
    )
    assert profiler_report_uri({"TrainingJobName": "j"}) is None


# ------------------------------------------------------ without Debugger: TensorBoard, metrics


def _without_debugger(trained_job: TrainedJob, root: Path) -> Path:
    """A copy of the job's outputs as a job without a hook leaves them."""
    job_dir = root / "job"
    shutil.copytree(
        trained_job.job_dir / "output", job_dir / "output", ignore=shutil.ignore_patterns("tensors")
    )
    return job_dir


def test_report_without_debugger_reads_tensorboard_then_metrics_json(
    trained_job: TrainedJob, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    job_dir = _without_debugger(trained_job, tmp_path)
    metrics = trained_job.metrics
    for source, remove in (("TensorBoard events", None), ("metrics.json", "tensorboard")):
        if remove:
            shutil.rmtree(job_dir / "output" / remove)
        png = tmp_path / f"{remove}.png"
        code = cloud.main(["report", "--job", str(job_dir), "--plot", str(png)])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert re.search(rf"^loss curves from {source}: ", out, re.M), out
        assert epoch_line(out, "train") == (2, *(round(v, 4) for v in metrics["train:loss"]))
        assert epoch_line(out, "eval", "valid") == (
            2,
            *(round(v, 4) for v in metrics["valid:loss"]),
        )
        assert "debugger output" not in out
        assert png.read_bytes().startswith(PNG_MAGIC)


def epoch_line(out: str, mode: str, name: str | None = None) -> tuple[int, float, float]:
    match = re.search(
        rf"^{mode} +{name or mode}: (\d+) epochs, first (\S+), last (\S+),", out, re.M
    )
    assert match, out
    return int(match[1]), float(match[2]), float(match[3])


def test_report_on_a_sagemaker_job_without_debugger_reads_s3(
    trained_job: TrainedJob,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """TensorBoard events from TensorBoardOutputConfig's S3 path; without them, metrics.json
    from the job's output.tar.gz."""
    with moto_server() as endpoint:
        for key, value in emulator_env(endpoint).items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        sagemaker = boto3.client("sagemaker")
        for job, tensorboard in (("with-tensorboard", True), ("with-metrics", False)):
            extra = {}
            if tensorboard:
                extra["TensorBoardOutputConfig"] = {"S3OutputPath": f"s3://{BUCKET}/tb/{job}"}
                for path in (trained_job.job_dir / "output" / "tensorboard").iterdir():
                    s3.upload_file(str(path), BUCKET, f"tb/{job}/{path.name}")
            create_training_job(sagemaker, job, **extra)
            artifacts = sagemaker.describe_training_job(TrainingJobName=job)["ModelArtifacts"]
            archive = io.BytesIO()
            output_data = trained_job.job_dir / "output" / "data"
            with tarfile.open(fileobj=archive, mode="w:gz") as tar:
                for name in ("metrics.json", *OUTPUT_FILES):
                    tar.add(output_data / name, name)
            bucket, _, key = artifacts["S3ModelArtifacts"].removeprefix("s3://").partition("/")
            s3.put_object(
                Bucket=bucket,
                Key=key.replace("model.tar.gz", "output.tar.gz"),
                Body=archive.getvalue(),
            )
            png = tmp_path / job / "loss.png"
            code = cloud.main(["report", "--job", job, "--plot", str(png)])
            out, err = capsys.readouterr()
            assert code == 0, err
            source = "TensorBoard events" if tensorboard else "metrics.json"
            assert re.search(rf"^loss curves from {source}: s3://{BUCKET}/", out, re.M), out
            assert epoch_line(out, "train")[0] == 2
            # The output archive's evaluation, beside the loss plot.
            assert_evaluation_beside(png, job, output_data, out)
