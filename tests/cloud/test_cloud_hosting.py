"""Every hosting mode against moto: Batch Transform, asynchronous, serverless, autoscaled and
multi-model endpoints.

Assertions read back what reached the emulated API (describe_* calls, and the recorder for
Application Auto Scaling, CloudWatch and the runtime calls). moto runs nothing: a transform
job is Completed at once without outputs (the tests put `.out` objects where SageMaker
would), and endpoint results come from moto's queue of canned answers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from launch.cloud import cli as cloud
from launch.cloud.hosting import instance_vcpus, requests_per_instance
from launch.cloud.transform import TransformSettings
from launch.synthetic_images import make_image_folder
from support.aws_emulator import AUTOSCALING, CLOUDWATCH, Emulator

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "hosting-tests"
SERVE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgcls-serve:t1"
COMMON = ("--role", ROLE, "--bucket", BUCKET, "--serve-image", SERVE_IMAGE)
MODEL_DATA = f"s3://{BUCKET}/image-classifier/output/job-1/output/model.tar.gz"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cloud.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cloud.main(list(argv))
    _, err = capsys.readouterr()
    assert code == 1
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


def predictions(label: str, probability: float = 0.9) -> str:
    """A body as the serving image answers one image."""
    top = {"label": label, "probability": probability, "probabilities": {label: probability}}
    return json.dumps({"predictions": [top]})


def s3() -> Any:
    return boto3.client("s3")


def sagemaker() -> Any:
    return boto3.client("sagemaker")


def name_after(out: str, words: str) -> str:
    """The name that follows `words` at the start of an output line (`transform job X:`)."""
    line = next(line for line in out.splitlines() if line.startswith(words + " "))
    return line.removeprefix(words + " ").split()[0].rstrip(":")


def objects(prefix: str) -> dict[str, bytes]:
    listed = s3().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {
        item["Key"]: s3().get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        for item in listed
    }


def table_rows(out: str) -> dict[str, str]:
    """invoke's table: image file name -> the rest of its row, single-spaced."""
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    return {Path(words[0]).name: " ".join(words[1:]) for words in rows}


@pytest.fixture
def bucket(emulator: Emulator) -> str:
    s3().create_bucket(Bucket=BUCKET)
    return BUCKET


# ------------------------------------------------------------------------------ Batch Transform


def test_transform_uploads_a_folder_sends_one_record_per_image_and_writes_the_csv(
    emulator: Emulator, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    images = make_image_folder(tmp_path / "images", 2)  # cat/cat.{0,1}.jpg, dog/dog.{0,1}.jpg
    (images / "notes.txt").write_text("not an image: not uploaded")
    # What SageMaker would write for three of the four images: <output>/<input name>.out
    answers = {"cat/cat.0.jpg": "cat", "cat/cat.1.jpg": "dog", "dog/dog.0.jpg": "dog"}
    for name, label in answers.items():
        s3().put_object(Bucket=BUCKET, Key=f"results/{name}.out", Body=predictions(label))
    table = tmp_path / "predictions.csv"
    out = run_cli(
        capsys,
        "transform",
        *COMMON,
        "--model-data",
        MODEL_DATA,
        "--input",
        str(images),
        "--output",
        f"s3://{BUCKET}/results",
        "--instance-count",
        "2",
        "--csv",
        str(table),
    )
    job = name_after(out, "transform job")
    input_prefix = f"image-classifier/transform/{job}/input/"
    uploaded = objects(input_prefix)
    assert uploaded == {
        input_prefix + path.relative_to(images).as_posix(): path.read_bytes()
        for path in images.rglob("*.jpg")
    }

    described = sagemaker().describe_transform_job(TransformJobName=job)
    assert described["TransformInput"]["DataSource"] == {
        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{input_prefix}"}
    }
    assert described["TransformInput"]["ContentType"] == "image/jpeg"
    assert described["TransformInput"].get("SplitType", "None") == "None"  # whole objects
    assert described["BatchStrategy"] == "SingleRecord"
    # The serving image's limits: 6 MB requests, one worker on 4 vCPUs -> 2 requests at once,
    # one queued ahead and each within the model server's 60 s -> 120 s per request.
    assert described["MaxPayloadInMB"] == 6
    assert described["MaxConcurrentTransforms"] == 2
    assert described["ModelClientConfig"] == {
        "InvocationsTimeoutInSeconds": 120,
        "InvocationsMaxRetries": 1,
    }
    assert described["Environment"] == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60",
    }
    assert described["TransformResources"] == {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge"}
    assert described["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/results"
    assert described["TransformOutput"]["Accept"] == "application/json"
    (request,) = emulator.requests("CreateTransformJob")
    assert "SplitType" not in request["TransformInput"]
    (model,) = emulator.requests("CreateModel")
    container = model["PrimaryContainer"]
    assert (container["Image"], container["ModelDataUrl"]) == (SERVE_IMAGE, MODEL_DATA)
    assert sagemaker().list_models()["Models"] == []  # deleted once the job had ended

    with table.open() as stream:
        rows = list(csv.reader(stream))
    assert rows == [
        ["file", "label", "probability"],
        ["cat/cat.0.jpg", "cat", "0.9000"],
        ["cat/cat.1.jpg", "dog", "0.9000"],
        ["dog/dog.0.jpg", "dog", "0.9000"],
    ]
    assert f"transform job {job}: 3 results for 4 images" in out
    assert "  dog  2\n  cat  1\n" in out
    assert "1 images without a result, e.g. dog/dog.1.jpg" in out


def test_transform_of_an_s3_prefix_refuses_other_objects_then_reports_later(
    emulator: Emulator, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inputs = "s3://hosting-tests/incoming"
    s3().put_object(Bucket=BUCKET, Key="incoming/a.jpg", Body=b"jpeg bytes")
    s3().put_object(Bucket=BUCKET, Key="incoming/b.png", Body=b"png bytes")
    s3().put_object(Bucket=BUCKET, Key="incoming/readme.md", Body=b"notes")
    transform = ("transform", *COMMON, "--model-data", MODEL_DATA, "--input", inputs)

    err = one_line_error(capsys, *transform)
    assert err == (
        "error: 1 objects under s3://hosting-tests/incoming/ are not .jpg/.jpeg/.png images "
        "(e.g. readme.md): every object under --input becomes a request\n"
    )
    s3().delete_object(Bucket=BUCKET, Key="incoming/readme.md")
    err = one_line_error(capsys, *transform, "--max-payload-mb", "0")
    assert err.startswith("error: --max-payload-mb must be 1 to 100, got 0")
    assert emulator.requests("CreateTransformJob") == []

    out = run_cli(capsys, *transform, "--no-wait", "--instance-type", "ml.c5.4xlarge")
    job = name_after(out, "transform job")
    assert f"python scripts/cloud.py transform-report --job {job}" in out
    described = sagemaker().describe_transform_job(TransformJobName=job)
    assert described["TransformInput"]["ContentType"] == "application/x-image"  # jpg and png
    assert described["MaxConcurrentTransforms"] == 8  # 16 vCPUs: 4 workers, 2 requests each
    output = described["TransformOutput"]["S3OutputPath"]
    assert output == f"s3://{BUCKET}/image-classifier/transform/{job}/output"

    err = one_line_error(capsys, "transform-report", "--bucket", BUCKET, "--job", job)
    assert err.startswith(f"error: no .out results under {output}/")
    for name, label in (("a.jpg", "cat"), ("b.png", "dog")):
        key = f"image-classifier/transform/{job}/output/{name}.out"
        s3().put_object(Bucket=BUCKET, Key=key, Body=predictions(label, 0.75))
    table = tmp_path / "report.csv"
    out = run_cli(capsys, "transform-report", "--bucket", BUCKET, "--job", job, "--csv", str(table))
    assert table.read_text().splitlines() == [
        "file,label,probability",
        "a.jpg,cat,0.7500",
        "b.png,dog,0.7500",
    ]
    assert f"transform job {job}: 2 results for 2 images" in out


# ------------------------------------------------------------------------- asynchronous


def test_async_endpoint_scales_to_zero_and_invoke_polls_s3_for_results(
    emulator: Emulator, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sns = boto3.client("sns")
    ok, failed = (sns.create_topic(Name=name)["TopicArn"] for name in ("done", "failed"))
    out = run_cli(
        capsys,
        "deploy",
        *COMMON,
        "--model-data",
        MODEL_DATA,
        "--endpoint",
        "imgcls-async",
        "--instance-type",
        "ml.m5.xlarge",
        "--async",
        "--async-output",
        f"s3://{BUCKET}/async-results",
        "--success-topic",
        ok,
        "--error-topic",
        failed,
        "--min-instances",
        "0",
        "--max-instances",
        "3",
    )
    assert "endpoint imgcls-async: InService" in out
    config = sagemaker().describe_endpoint_config(EndpointConfigName="imgcls-async")
    assert config["AsyncInferenceConfig"] == {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
        "OutputConfig": {
            "S3OutputPath": f"s3://{BUCKET}/async-results",
            "S3FailurePath": f"s3://{BUCKET}/image-classifier/async/imgcls-async/failure",
            "NotificationConfig": {"SuccessTopic": ok, "ErrorTopic": failed},
        },
    }
    (variant,) = config["ProductionVariants"]
    assert variant["InitialInstanceCount"] == 1  # scales in to zero once running
    model = sagemaker().describe_model(ModelName="imgcls-async")
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "100"}

    autoscaling = boto3.client("application-autoscaling")
    resource = "endpoint/imgcls-async/variant/AllTraffic"
    (target,) = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"
    ]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (
        resource,
        0,
        3,
    )
    policies = {
        policy["PolicyName"]: policy
        for policy in autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
            "ScalingPolicies"
        ]
    }
    backlog = policies["imgcls-async-backlog"]["TargetTrackingScalingPolicyConfiguration"]
    assert backlog["TargetValue"] == 5.0
    assert backlog["CustomizedMetricSpecification"]["MetricName"] == (
        "ApproximateBacklogSizePerInstance"
    )
    step = policies["imgcls-async-scale-from-zero"]
    assert step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}
    ]
    (alarm,) = boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [step["PolicyARN"]]
    assert [r["MinCapacity"] for r in emulator.requests("RegisterScalableTarget", AUTOSCALING)] == [
        0
    ]

    # Two images, each through the SDK and boto3: moto hands out its queue in that order.
    images = make_image_folder(tmp_path / "images", 1)
    results = [
        {"data": predictions("cat")},
        {"data": predictions("cat")},
        {"is_failure": True, "data": "image too dark"},
        {"is_failure": True, "data": "image too dark"},
    ]
    emulator.post("/moto-api/static/sagemaker/async-endpoint-results", {"results": results})
    code = cloud.main(["invoke", "--bucket", BUCKET, "--endpoint", "imgcls-async", str(images)])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == "1 images without a matching answer from both paths\n"
    assert out.splitlines()[0].split() == ["image", "Predictor", "invoke_endpoint_async"]
    assert table_rows(out) == {
        "cat.0.jpg": "cat 0.900 cat 0.900",
        "dog.0.jpg": "failed: image too dark failed: image too dark",
    }
    calls = emulator.calls_to("/endpoints/imgcls-async/async-invocations")
    assert len(calls) == 4
    sent = {path.read_bytes() for path in images.rglob("*.jpg")}
    for call in calls:
        headers = call["headers"]
        assert headers["X-Amzn-Sagemaker-Content-Type"] == "image/jpeg"
        assert headers["X-Amzn-Sagemaker-Invocationtimeoutseconds"] == "900"
        bucket_name, _, key = headers["X-Amzn-Sagemaker-Inputlocation"][5:].partition("/")
        assert bucket_name == BUCKET
        assert s3().get_object(Bucket=BUCKET, Key=key)["Body"].read() in sent

    out = run_cli(capsys, "cleanup", "--endpoint", "imgcls-async")
    assert out.splitlines()[:4] == [
        "deleted scaling policy imgcls-async-backlog",
        "deleted scaling policy imgcls-async-scale-from-zero",
        "deleted alarm imgcls-async-HasBacklogWithoutCapacity",
        f"deleted scalable target {resource}",
    ]
    assert (
        autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    )
    # moto keeps a deregistered target's policies (AWS does not): cleanup deleted them.
    assert (
        autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    )
    assert boto3.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert emulator.requests("DeleteAlarms", CLOUDWATCH) == [
        {"AlarmNames": ["imgcls-async-HasBacklogWithoutCapacity"]}
    ]
    assert sagemaker().list_endpoints()["Endpoints"] == []


# ----------------------------------------------------------------------------- serverless


def test_serverless_endpoint_and_invoke_refusing_bodies_over_4_mb(
    emulator: Emulator, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = run_cli(
        capsys,
        "deploy",
        *COMMON,
        "--model-data",
        MODEL_DATA,
        "--endpoint",
        "imgcls-serverless",
        "--serverless",
        "--memory-mb",
        "2048",
        "--max-concurrency",
        "4",
    )
    assert "to endpoint imgcls-serverless serverless (2048 MB, 4 concurrent requests)" in out
    config = sagemaker().describe_endpoint_config(EndpointConfigName="imgcls-serverless")
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 4}
    assert "InstanceType" not in variant
    model = sagemaker().describe_model(ModelName="imgcls-serverless")
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "4"}

    small, large = tmp_path / "small.png", tmp_path / "large.png"
    small.write_bytes(b"small")
    large.write_bytes(b"\0" * (4 * 1024 * 1024 + 1))
    err = one_line_error(
        capsys, "invoke", "--endpoint", "imgcls-serverless", str(small), str(large)
    )
    assert err == (
        f"error: {large}: the request is 4.0 MB, over the 4 MB a serverless endpoint accepts "
        "(deploy --async for large images)\n"
    )
    assert emulator.calls_to("/invocations") == []  # refused before anything was sent

    emulator.post(
        "/moto-api/static/sagemaker/endpoint-results",
        {"results": [{"Body": predictions("dog"), "ContentType": "application/json"}]},
    )
    out = run_cli(capsys, "invoke", "--endpoint", "imgcls-serverless", str(small))
    assert table_rows(out) == {"small.png": "dog 0.900 dog 0.900"}
    assert [call["body"] for call in emulator.calls_to("/invocations")] == [b"small", b"small"]


# ------------------------------------------------------------------- real-time autoscaling


def test_real_time_autoscaling_is_registered_and_cleanup_removes_it(
    emulator: Emulator, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_cli(
        capsys,
        "deploy",
        *COMMON,
        "--model-data",
        MODEL_DATA,
        "--endpoint",
        "imgcls-scaled",
        "--min-instances",
        "2",
        "--max-instances",
        "5",
        "--target-invocations-per-instance",
        "300",
    )
    assert "autoscaling: 2-5 instances, target 300 invocations per instance per minute" in out
    config = sagemaker().describe_endpoint_config(EndpointConfigName="imgcls-scaled")
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 2
    resource = "endpoint/imgcls-scaled/variant/AllTraffic"
    (registered,) = emulator.requests("RegisterScalableTarget", AUTOSCALING)
    assert registered == {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource,
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "MinCapacity": 2,
        "MaxCapacity": 5,
    }
    (policy,) = emulator.requests("PutScalingPolicy", AUTOSCALING)
    assert policy["PolicyName"] == "imgcls-scaled-invocations"
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 300.0,
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
        },
        "ScaleOutCooldown": 60,
        "ScaleInCooldown": 300,
    }
    assert emulator.requests("PutMetricAlarm", CLOUDWATCH) == []  # only to scale from zero

    out = run_cli(capsys, "cleanup", "--endpoint", "imgcls-scaled")
    assert out.splitlines() == [
        "deleted scaling policy imgcls-scaled-invocations",
        f"deleted scalable target {resource}",
        "deleted endpoint imgcls-scaled",
        "deleted endpoint config imgcls-scaled",
        "deleted model imgcls-scaled",
    ]
    autoscaling = boto3.client("application-autoscaling")
    assert (
        autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    )
    assert len(emulator.requests("DeregisterScalableTarget", AUTOSCALING)) == 1


# ----------------------------------------------------------------------------- multi-model


def test_multi_model_endpoint_over_a_prefix_and_invoke_with_a_target_model(
    emulator: Emulator, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("customer-a.tar.gz", "customer-b.tar.gz"):
        s3().put_object(Bucket=BUCKET, Key=f"models/{name}", Body=b"archive")
    out = run_cli(
        capsys,
        "deploy",
        *COMMON,
        "--multi-model",
        "--model-data",
        f"s3://{BUCKET}/models",
        "--endpoint",
        "imgcls-mme",
    )
    assert "  models: customer-a.tar.gz, customer-b.tar.gz\n" in out
    assert "invoke --endpoint imgcls-mme --target-model customer-a.tar.gz IMAGES..." in out
    container = sagemaker().describe_model(ModelName="imgcls-mme")["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/models/"
    assert container["Environment"] == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6",
        "SAGEMAKER_MULTI_MODEL": "true",
    }

    images = make_image_folder(tmp_path / "images", 1, classes=("cat",))
    err = one_line_error(capsys, "invoke", "--endpoint", "imgcls-mme", str(images))
    assert err == (
        "error: endpoint imgcls-mme is multi-model: pass --target-model NAME "
        "(customer-a.tar.gz, customer-b.tar.gz)\n"
    )
    err = one_line_error(
        capsys, "invoke", "--endpoint", "imgcls-mme", "--target-model", "c.tar.gz", str(images)
    )
    assert err.startswith(f"error: no model archive c.tar.gz under s3://{BUCKET}/models/")

    emulator.post(
        "/moto-api/static/sagemaker/endpoint-results",
        {"results": [{"Body": predictions("cat"), "ContentType": "application/json"}]},
    )
    out = run_cli(
        capsys,
        "invoke",
        "--endpoint",
        "imgcls-mme",
        "--target-model",
        "customer-b.tar.gz",
        "--payload",
        "json",
        str(images),
    )
    assert table_rows(out) == {"cat.0.jpg": "cat 0.900 cat 0.900"}
    calls = emulator.calls_to("/endpoints/imgcls-mme/invocations")
    assert [call["headers"]["X-Amzn-Sagemaker-Target-Model"] for call in calls] == [
        "customer-b.tar.gz",
        "customer-b.tar.gz",
    ]


# ------------------------------------------------------------- refused before any AWS call


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--async", "--serverless"], "choose one of --async and --serverless"),
        (["--memory-mb", "2048"], "--memory-mb needs --serverless"),
        (["--async-output", "s3://b/o"], "--async-output needs --async"),
        (["--serverless", "--memory-mb", "3000"], "--memory-mb must be one of 1024, 2048,"),
        (["--serverless", "--max-instances", "2"], "serverless endpoints scale by themselves"),
        (
            ["--max-instances", "2"],
            "autoscaling a real-time endpoint needs --target-invocations-per-instance N",
        ),
        (["--min-instances", "0", "--max-instances", "2", "--target-invocations-per-instance",
          "10"], "--min-instances must be at least 1 (only an asynchronous endpoint"),
        (["--async", "--max-instances", "2", "--target-invocations-per-instance", "10"],
         "--async scales on its queue: use --target-backlog-per-instance"),
        (["--min-instances", "1"], "--min-instances needs --max-instances"),
        (["--target-invocations-per-instance", "10"],
         "--target-invocations-per-instance needs --max-instances"),
        (["--async", "--min-instances", "-1", "--max-instances", "2"],
         "--min-instances must be at least 0\n"),
        (["--async", "--multi-model"], "--multi-model endpoints are real-time"),
    ],
)  # fmt: skip
def test_deploy_refuses_mixed_modes_in_one_line(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    err = one_line_error(capsys, "deploy", "--model-data", "s3://b/m/", *flags)
    assert err.startswith(f"error: {message}")


def test_multi_model_needs_a_prefix_and_transform_its_limits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = one_line_error(capsys, "deploy", "--job", "j", "--multi-model")
    assert err.startswith("error: --multi-model needs --model-data S3_PREFIX")
    transform = ("transform", "--model-data", "s3://b/m.tar.gz", "--input", "s3://b/in/")
    err = one_line_error(
        capsys, *transform, "--max-payload-mb", "20", "--max-concurrent-transforms", "6"
    )
    assert err == (
        "error: --max-concurrent-transforms x --max-payload-mb must be 1 to 100, got 6 x 20\n"
    )
    err = one_line_error(capsys, *transform, "--invocation-timeout", "3601")
    assert err.startswith("error: --invocation-timeout must be 1 to 3600 seconds")
    err = one_line_error(capsys, *transform, "--local")
    assert err.startswith("error: transform has no local mode")


@pytest.mark.parametrize(
    ("instance_type", "vcpus", "in_flight"),
    [
        ("ml.t2.medium", 2, 2),
        ("ml.m5.large", 2, 2),
        ("ml.m5.xlarge", 4, 2),
        ("ml.c5.4xlarge", 16, 8),
        ("ml.g4dn.12xlarge", 48, 24),
        ("ml.m5.metal", None, 2),  # unknown size: one worker
    ],
)
def test_requests_in_flight_follow_the_serving_images_workers(
    instance_type: str, vcpus: int | None, in_flight: int
) -> None:
    assert instance_vcpus(instance_type) == vcpus
    assert requests_per_instance(instance_type) == in_flight


def test_transform_concurrency_stays_within_the_payload_budget() -> None:
    # 36 vCPUs would keep 18 requests in flight, but 18 x 20 MB is over SageMaker's 100 MB.
    assert TransformSettings("ml.c5.9xlarge", max_payload_mb=20).concurrent_transforms == 5
    assert TransformSettings("ml.c5.9xlarge").concurrent_transforms == 16  # 100 // 6
    assert TransformSettings("ml.c5.9xlarge", max_concurrent=3).concurrent_transforms == 3
