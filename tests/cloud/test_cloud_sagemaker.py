"""`tune`, `train`, `deploy`, `invoke` and `cleanup` against moto's SageMaker.

Assertions read back what reached the emulated API: describe_* calls where moto keeps the
field, and moto's request recorder where it drops it (ProfilerConfig, the profiler rule,
the training job's MetricDefinitions).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from launch.cloud import cli as cloud
from launch.synthetic_images import make_image_folder
from support.aws_emulator import Emulator
from trainer.metrics import METRIC_DEFINITIONS

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "launch-tests"
TRAIN_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgcls-train:t1"
SERVE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgcls-serve:t1"
COMMON = ("--role", ROLE, "--bucket", BUCKET)
LOSS_RULES = {"LossNotDecreasing", "Overfit", "Overtraining"}
RULES = LOSS_RULES | {"VanishingGradient", "PoorWeightInitialization"}


@pytest.fixture
def channels(emulator: Emulator) -> str:
    """train/valid/test channels in the bucket, as `upload` leaves them."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for channel in ("train", "valid", "test"):
        for label in ("cat", "dog"):
            s3.put_object(Bucket=BUCKET, Key=f"image-classifier/data/{channel}/{label}/0.jpg")
    return f"s3://{BUCKET}/image-classifier/data"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cloud.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def sagemaker() -> Any:
    return boto3.client("sagemaker")


def job_name_in(out: str, kind: str) -> str:
    lines = out.splitlines()
    return next(line.split()[2].rstrip(":") for line in lines if line.startswith(f"{kind} job "))


# -------------------------------------------------------------------------------------- tune


def test_tune_sends_the_search_space_objective_and_metric_regexes(
    emulator: Emulator, channels: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    best_file = tmp_path / "best.json"
    out = run_cli(
        capsys,
        "tune",
        *COMMON,
        "--train-image",
        TRAIN_IMAGE,
        "--max-jobs",
        "6",
        "--max-parallel-jobs",
        "3",
        "--hp",
        "epochs=4",
        "--spot",
        "--output",
        str(best_file),
    )
    name = job_name_in(out, "tuning")
    described = sagemaker().describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    config = described["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Maximize",
        "MetricName": "valid:accuracy",
    }
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 3}
    ranges = config["ParameterRanges"]
    continuous = {r["Name"]: r for r in ranges["ContinuousParameterRanges"]}
    assert continuous["lr"] == {
        "Name": "lr",
        "MinValue": "1e-05",
        "MaxValue": "0.1",
        "ScalingType": "Logarithmic",
    }
    assert continuous["eps"] == {
        "Name": "eps",
        "MinValue": "1e-09",
        "MaxValue": "1e-08",
        "ScalingType": "Linear",
    }
    assert (continuous["weight_decay"]["MinValue"], continuous["weight_decay"]["MaxValue"]) == (
        "0.001",
        "0.1",
    )
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch_size", "Values": ["64", "128"]}]
    definition = described["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert definition["StaticHyperParameters"]["epochs"] == "4"
    assert definition["StaticHyperParameters"]["onnx"] == "false"  # trials skip the ONNX graphs
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["CheckpointConfig"]["S3Uri"] == (
        f"s3://{BUCKET}/image-classifier/checkpoints/{name}"
    )
    assert {c["ChannelName"] for c in definition["InputDataConfig"]} == {"train", "valid", "test"}

    # moto's best job is canned: "FakeTrainingJobName", tuned {"string": ...}.
    best = json.loads(best_file.read_text())
    assert best["tuning_job"] == name
    assert best["training_job"] == "FakeTrainingJobName"
    assert best["hyperparameters"]["epochs"] == "4"
    assert "onnx" not in best["hyperparameters"]  # the job trained with them makes the graphs
    assert not any(key.startswith(("sagemaker_", "_tuning")) for key in best["hyperparameters"])
    assert "best training job FakeTrainingJobName" in out
    assert "  epochs=4" in out


def test_tune_can_minimise_valid_loss_without_waiting(
    emulator: Emulator, channels: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_cli(
        capsys,
        "tune",
        *COMMON,
        "--train-image",
        TRAIN_IMAGE,
        "--objective",
        "valid_loss",
        "--no-early-stopping",
        "--no-wait",
    )
    name = job_name_in(out, "tuning")
    assert f"train --tuning-job {name}" in out
    config = sagemaker().describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
        "HyperParameterTuningJobConfig"
    ]
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "valid:loss",
    }
    assert config["TrainingJobEarlyStoppingType"] == "Off"


# ------------------------------------------------------------------------------------- train


def test_train_sends_debugger_rules_profiler_and_spot_checkpoints(
    emulator: Emulator, channels: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    images = tmp_path / "images.json"
    images.write_text(json.dumps({"train": TRAIN_IMAGE, "serve": SERVE_IMAGE}))
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"hyperparameters": {"lr": "0.001", "batch_size": "64"}}))
    out = run_cli(
        capsys,
        "train",
        *COMMON,
        "--images-file",
        str(images),
        "--hyperparameters",
        str(best),
        "--hp",
        "batch_size=128",
        "--spot",
        "--save-interval",
        "5",
        "--no-wait",
    )
    name = job_name_in(out, "training")
    described = sagemaker().describe_training_job(TrainingJobName=name)
    assert described["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE
    assert described["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert described["HyperParameters"] == {"lr": "0.001", "batch_size": "128"}
    assert described["EnableManagedSpotTraining"] is True
    assert described["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/image-classifier/checkpoints/{name}",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert (
        described["StoppingCondition"]["MaxWaitTimeInSeconds"]
        >= (described["StoppingCondition"]["MaxRuntimeInSeconds"])
    )
    hook = described["DebugHookConfig"]
    assert hook["S3OutputPath"] == f"s3://{BUCKET}/image-classifier/debugger"
    assert hook["HookParameters"] == {"save_interval": "5"}
    collections = {c["CollectionName"]: c for c in hook["CollectionConfigurations"]}
    # One `losses` entry, at the hook's interval, although the loss rules ask for 500.
    assert [c["CollectionName"] for c in hook["CollectionConfigurations"]].count("losses") == 1
    assert collections["losses"]["CollectionParameters"] == {"save_interval": "5"}
    assert {"gradients", "relu_input"} <= set(collections)  # what the gradient rules read
    rules = {rule["RuleConfigurationName"] for rule in described["DebugRuleConfigurations"]}
    assert rules == RULES

    # moto drops these fields from describe_training_job; the request shows what was sent.
    (request,) = emulator.requests("CreateTrainingJob")
    assert request["ProfilerConfig"]["S3OutputPath"] == f"s3://{BUCKET}/image-classifier/profiler"
    assert request["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    (profiler_rule,) = request["ProfilerRuleConfigurations"]
    assert profiler_rule["RuleConfigurationName"].startswith("ProfilerReport")
    assert profiler_rule["RuleParameters"]["rule_to_invoke"] == "ProfilerReport"
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert f"report --job {name}" in out
    assert f"deploy --job {name}" in out


def test_train_with_a_tuning_jobs_best_hyperparameters_and_waits(
    emulator: Emulator, channels: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tune_out = run_cli(
        capsys, "tune", *COMMON, "--train-image", TRAIN_IMAGE, "--hp", "epochs=3", "--no-wait"
    )
    tuning_job = job_name_in(tune_out, "tuning")
    out = run_cli(
        capsys,
        "train",
        *COMMON,
        "--train-image",
        TRAIN_IMAGE,
        "--tuning-job",
        tuning_job,
        "--instance-type",
        "ml.m5.xlarge",
    )
    name = job_name_in(out, "training")
    described = sagemaker().describe_training_job(TrainingJobName=name)
    # The tuning job's static hyperparameters plus moto's canned best job's tuned ones.
    assert described["HyperParameters"] == {"epochs": "3", "string": "TunedHyperParameters"}
    assert described["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert (
        "EnableManagedSpotTraining" not in described or not described["EnableManagedSpotTraining"]
    )
    assert "status: Completed" in out
    assert f"model: s3://{BUCKET}/image-classifier/output/{name}/output/model.tar.gz" in out


def test_train_without_debugger_on_two_multi_gpu_instances_streams_its_channels(
    emulator: Emulator, channels: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_cli(
        capsys,
        "train",
        *COMMON,
        "--train-image",
        TRAIN_IMAGE,
        "--no-debugger",
        "--instance-count",
        "2",
        "--instance-type",
        "ml.g4dn.12xlarge",
        "--input-mode",
        "FastFile",
        "--hp",
        "train_layers=layer4",
        "--no-wait",
    )
    name = job_name_in(out, "training")
    described = sagemaker().describe_training_job(TrainingJobName=name)
    assert described["ResourceConfig"]["InstanceCount"] == 2
    assert described["ResourceConfig"]["InstanceType"] == "ml.g4dn.12xlarge"
    assert {c["ChannelName"]: c["InputMode"] for c in described["InputDataConfig"]} == {
        "train": "FastFile",
        "valid": "FastFile",
        "test": "FastFile",
    }
    for channel in described["InputDataConfig"]:  # every host sees every file
        distribution = channel["DataSource"]["S3DataSource"].get("S3DataDistributionType")
        assert distribution in (None, "FullyReplicated")
    assert described["TensorBoardOutputConfig"] == {
        "S3OutputPath": f"s3://{BUCKET}/image-classifier/tensorboard/{name}",
        "LocalPath": "/opt/ml/output/tensorboard",
    }
    (request,) = emulator.requests("CreateTrainingJob")
    assert "DebugHookConfig" not in request
    assert "DebugRuleConfigurations" not in request
    assert "ProfilerRuleConfigurations" not in request
    assert request["ProfilerConfig"] == {"DisableProfiler": True}  # the SDK always sends it
    assert "debugger output" not in out
    assert f"tensorboard output: s3://{BUCKET}/image-classifier/tensorboard/{name}" in out


def test_train_with_debugger_also_writes_tensorboard_and_tune_takes_instance_count(
    emulator: Emulator, channels: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_cli(capsys, "train", *COMMON, "--train-image", TRAIN_IMAGE, "--no-wait")
    name = job_name_in(out, "training")
    described = sagemaker().describe_training_job(TrainingJobName=name)
    assert (
        described["DebugHookConfig"]["S3OutputPath"] == f"s3://{BUCKET}/image-classifier/debugger"
    )
    assert described["TensorBoardOutputConfig"]["LocalPath"] == "/opt/ml/output/tensorboard"
    assert described["ResourceConfig"]["InstanceCount"] == 1
    assert {c.get("InputMode", "File") for c in described["InputDataConfig"]} == {"File"}

    out = run_cli(
        capsys,
        "tune",
        *COMMON,
        "--train-image",
        TRAIN_IMAGE,
        "--instance-count",
        "2",
        "--input-mode",
        "FastFile",
        "--no-wait",
    )
    tuning = sagemaker().describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=job_name_in(out, "tuning")
    )
    definition = tuning["TrainingJobDefinition"]
    assert definition["HyperParameterTuningResourceConfig"]["InstanceCount"] == 2
    assert {c["InputMode"] for c in definition["InputDataConfig"]} == {"FastFile"}


# ---------------------------------------------------------------- deploy, invoke and cleanup


def test_deploy_invoke_and_cleanup(
    emulator: Emulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    model_data = f"s3://{BUCKET}/image-classifier/output/job-1/output/model.tar.gz"
    out = run_cli(
        capsys,
        "deploy",
        *COMMON,
        "--serve-image",
        SERVE_IMAGE,
        "--model-data",
        model_data,
        "--endpoint",
        "imgcls-test",
    )
    assert "endpoint imgcls-test: InService" in out
    assert "python scripts/cloud.py invoke --endpoint imgcls-test" in out
    assert "python scripts/cloud.py cleanup --endpoint imgcls-test" in out
    client = sagemaker()
    endpoint = client.describe_endpoint(EndpointName="imgcls-test")
    assert endpoint["EndpointStatus"] == "InService"
    config = client.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.t2.medium", 1)
    model = client.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == SERVE_IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == model_data
    assert model["ExecutionRoleArn"] == ROLE

    # moto answers InvokeEndpoint with canned bodies; give it the serving image's JSON.
    images = make_image_folder(tmp_path / "images", 1)
    predictions = [
        {"predictions": [{"label": label, "probability": 0.9, "probabilities": {}}]}
        for label in ("cat", "dog")
    ]
    emulator.post(
        "/moto-api/static/sagemaker/endpoint-results",
        {
            "results": [
                {"Body": json.dumps(p), "ContentType": "application/json"} for p in predictions
            ]
        },
    )
    out = run_cli(capsys, "invoke", "--endpoint", "imgcls-test", "--payload", "json", str(images))
    rows = {Path(line.split()[0]).name: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows == {
        "cat.0.jpg": ["cat", "0.900", "cat", "0.900"],
        "dog.0.jpg": ["dog", "0.900", "dog", "0.900"],
    }
    sent = base64.b64encode((images / "cat" / "cat.0.jpg").read_bytes()).decode()
    bodies = [json.loads(body) for body in emulator_invocations(emulator)]
    assert {"instances": [{"b64": sent}]} in bodies

    out = run_cli(capsys, "cleanup", "--endpoint", "imgcls-test")
    assert out.splitlines() == [
        "deleted endpoint imgcls-test",
        f"deleted endpoint config {endpoint['EndpointConfigName']}",
        f"deleted model {variant['ModelName']}",
    ]
    assert client.list_endpoints()["Endpoints"] == []
    assert client.list_endpoint_configs()["EndpointConfigs"] == []
    assert client.list_models()["Models"] == []


def emulator_recorded(emulator: Emulator) -> list[dict[str, Any]]:
    return [json.loads(line) for line in emulator.recording.read_text().splitlines()]


def emulator_invocations(emulator: Emulator) -> list[str]:
    """Bodies of the recorded InvokeEndpoint requests (a REST call, not X-Amz-Target JSON)."""
    return [
        base64.b64decode(entry["body"]).decode() if entry["body_encoded"] else entry["body"]
        for entry in emulator_recorded(emulator)
        if entry["url"].endswith("/invocations")
    ]


def create_real_time_endpoint(name: str) -> None:
    """An endpoint as `deploy` leaves it, made directly (invoke reads its hosting mode)."""
    client = sagemaker()
    client.create_model(
        ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": SERVE_IMAGE}
    )
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": name,
        "InstanceType": "ml.t2.medium",
        "InitialInstanceCount": 1,
    }
    client.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    client.create_endpoint(EndpointName=name, EndpointConfigName=name)


def test_invoke_with_image_bytes_reaches_the_endpoint(
    emulator: Emulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """moto's InvokeEndpoint decodes every body as UTF-8, so a JPEG gets a 500 back.

    What this can check: the request left with the image's bytes and content type, and the
    failure is one line.
    """
    image = make_image_folder(tmp_path / "images", 1, classes=("cat",)) / "cat" / "cat.0.jpg"
    create_real_time_endpoint("imgcls-bytes")
    code = cloud.main(["invoke", "--endpoint", "imgcls-bytes", str(image)])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("error: An error occurred (500) when calling the InvokeEndpoint")
    assert err.count("\n") == 1  # not moto's HTML error page, nor a traceback
    sent = [
        entry
        for entry in emulator_recorded(emulator)
        if entry["url"].endswith("/endpoints/imgcls-bytes/invocations")
    ]
    assert sent  # botocore retries a 500 twice: the same request each time
    for request in sent:
        assert request["headers"]["Content-Type"] == "image/jpeg"
        assert base64.b64decode(request["body"]) == image.read_bytes()


def test_deploy_a_training_jobs_model_and_cleanup_a_missing_endpoint(
    emulator: Emulator, channels: str, capsys: pytest.CaptureFixture[str]
) -> None:
    train_out = run_cli(capsys, "train", *COMMON, "--train-image", TRAIN_IMAGE, "--no-wait")
    job = job_name_in(train_out, "training")
    out = run_cli(capsys, "deploy", *COMMON, "--serve-image", SERVE_IMAGE, "--job", job)
    endpoint = next(line.split()[1].rstrip(":") for line in out.splitlines() if "InService" in line)
    model = sagemaker().describe_model(ModelName=endpoint)
    artifacts = sagemaker().describe_training_job(TrainingJobName=job)["ModelArtifacts"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == artifacts["S3ModelArtifacts"]

    code = cloud.main(["cleanup", "--endpoint", "no-such-endpoint"])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("error: endpoint no-such-endpoint not found")
