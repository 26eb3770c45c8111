"""The walk-through notebooks run, cell by cell, against the AWS API emulator: the 2.x one
where SDK 2.x is installed (.venv), the 3.x one where SDK 3.x is (.venv-sdk3).

The emulator completes every job at once but writes no job output: before the report cell
the test puts what a finished job leaves on S3 (metrics.json inside output.tar.gz, the last
source `report` reads) next to the model the emulator names, and it gives the emulator the
serving image's JSON answers for the invocations.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import boto3
import nbformat
import pytest
from nbclient import NotebookClient

from launch.cloud import sdk
from launch.cloud.settings import split_s3_uri
from launch.synthetic_images import make_dataset
from support.aws_emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = {"2.x": ROOT / "train_and_deploy.ipynb", "3.x": ROOT / "train_and_deploy_v3.ipynb"}
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "notebook-tests"
IMAGES = {
    "train": "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgcls-train:t1",
    "serve": "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgcls-serve:t1",
}
EPOCHS = [
    {"epoch": 1, "train_loss": 0.71, "valid_loss": 0.69},
    {"epoch": 2, "train_loss": 0.52, "valid_loss": 0.55},
]
ANSWERS = 9  # one classify, then four images through the predictor and through boto3


def installed_generation() -> str:
    versions = (sdk.installed_version(sdk.SDK2_DISTRIBUTION),)
    return sdk.choose(*versions, sdk.installed_version(sdk.SDK3_DISTRIBUTION)).name


def put_job_output(job: str) -> None:
    """metrics.json inside output.tar.gz, beside the model.tar.gz the emulator names."""
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=job)
    bucket, key = split_s3_uri(described["ModelArtifacts"]["S3ModelArtifacts"])
    metrics = json.dumps(EPOCHS).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        member = tarfile.TarInfo("metrics.json")
        member.size = len(metrics)
        tar.addfile(member, io.BytesIO(metrics))
    key = key.replace("model.tar.gz", "output.tar.gz")
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=archive.getvalue())


def printed(cell: Any) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", []))


def result(cell: Any) -> str:
    """The value a code cell ends with, as the notebook shows it."""
    results = [o for o in cell.get("outputs", []) if o["output_type"] == "execute_result"]
    return "".join(output["data"]["text/plain"] for output in results)


@pytest.fixture
def walk_through_env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The environment the notebook's kernel inherits; returns its working directory."""
    images_file = tmp_path / "images.json"
    images_file.write_text(json.dumps(IMAGES))
    make_dataset(tmp_path / "photos", per_class=6)
    monkeypatch.setenv("CATSDOGS_DIR", str(tmp_path / "photos"))
    monkeypatch.setenv("SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("SAGEMAKER_BUCKET", BUCKET)
    monkeypatch.setenv("IMAGES_FILE", str(images_file))
    answer = {"predictions": [{"label": "cat", "probability": 0.9, "probabilities": {}}]}
    emulator.post(
        "/moto-api/static/sagemaker/endpoint-results",
        {"results": [{"Body": json.dumps(answer), "ContentType": "application/json"}] * ANSWERS},
    )
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_the_walk_through_of_the_installed_sdk_runs_cell_by_cell(walk_through_env: Path) -> None:
    generation = installed_generation()
    notebook = nbformat.read(NOTEBOOKS[generation], as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(walk_through_env)}},
    )
    sagemaker = boto3.client("sagemaker")
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            if "cloud_report.report(" in cell.source:  # the job has "finished": its output
                (job,) = sagemaker.list_training_jobs()["TrainingJobSummaries"]
                put_job_output(job["TrainingJobName"])
            client.execute_cell(cell, index)  # raises CellExecutionError on any error

    code = {cell.source.splitlines()[-1]: cell for cell in notebook.cells if cell.source}
    report = printed(code["curves = cloud_report.report(job, info, plot)"])
    assert "loss curves from metrics.json: s3://" in report
    assert "train train: 2 epochs, first 0.7100, last 0.5200" in report
    (job,) = sagemaker.list_training_jobs()["TrainingJobSummaries"]
    plot = walk_through_env / "build" / "cloud" / f"{job['TrainingJobName']}-loss.png"
    assert plot.read_bytes().startswith(b"\x89PNG")
    answer = result(code["predictor.classify(body, content_type)"])
    assert answer.startswith("{'predictions': [{'label': 'cat', 'probability': 0.9")
    assert result(code["problems"]) == "0"  # the predictor and boto3 agreed on every image
    assert sagemaker.list_endpoints()["Endpoints"] == []  # the last cell cleaned up
    assert (
        len(sagemaker.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]) == 1
    )
