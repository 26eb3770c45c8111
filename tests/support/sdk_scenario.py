"""One run of every `cloud.py` command against an AWS API emulator, for comparing what the
SageMaker Python SDK generations send (tests/cloud/test_sdk_generations.py).

Run once per environment (`python -m support.sdk_scenario`), with AWS_ENDPOINT_URL and
the test credentials pointing at an emulator whose request recorder is on. Every command
goes through `launch.cloud.cli.main`, as `scripts/cloud.py` runs it; the script exits
non-zero at the first command that fails, naming it.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3

from launch.cloud import cli
from launch.synthetic_images import make_image_folder

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "sdk-scenario"
TRAIN_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgcls-train:t1"
SERVE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgcls-serve:t1"
MODEL_DATA = f"s3://{BUCKET}/models/model.tar.gz"
AWS = f"--bucket {BUCKET}"
SAGEMAKER = f"{AWS} --role {ROLE}"
TRAIN = f"{SAGEMAKER} --train-image {TRAIN_IMAGE}"
SERVE = f"{SAGEMAKER} --serve-image {SERVE_IMAGE}"
ANSWERS = ("cat", "cat", "dog", "dog")  # the SDK's and boto3's answers for two images


def prediction(label: str) -> str:
    return json.dumps({"predictions": [{"label": label, "probability": 0.9}]})


def post(endpoint: str, path: str, payload: dict[str, object]) -> None:
    """Give the emulator canned answers (moto's InvokeEndpoint results)."""
    request = urllib.request.Request(
        f"{endpoint}{path}", data=json.dumps(payload).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()


def run(line: str) -> None:
    """`cloud.py` with this command line."""
    print(f"$ cloud.py {line}", flush=True)
    started = time.monotonic()
    code = cli.main(shlex.split(line))
    print(f"({time.monotonic() - started:.1f} s)", flush=True)
    if code != 0:
        sys.exit(f"cloud.py {line} exited {code}")


def prepare_bucket() -> None:
    """The channels `upload` leaves, a model archive and a multi-model prefix."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for channel in ("train", "valid", "test"):
        for label in ("cat", "dog"):
            s3.put_object(Bucket=BUCKET, Key=f"image-classifier/data/{channel}/{label}/0.jpg")
    s3.put_object(Bucket=BUCKET, Key="models/model.tar.gz", Body=b"archive")
    for name in ("customer-a", "customer-b"):
        s3.put_object(Bucket=BUCKET, Key=f"models/many/{name}.tar.gz", Body=b"archive")


def training(work: Path) -> None:
    best = shlex.quote(str(work / "best.json"))
    run(f"tune {TRAIN} --max-jobs 6 --max-parallel-jobs 3 --hp epochs=4 --spot --output {best}")
    run(f"tune {TRAIN} --objective valid_loss --no-early-stopping --instance-count 2 --no-wait")
    run(
        f"train {TRAIN} --hp epochs=3 --hp lr=0.01 --spot --max-wait 90000 --save-interval 25 "
        "--no-wait"
    )
    run(
        f"train {TRAIN} --no-debugger --instance-count 2 --instance-type ml.g4dn.12xlarge "
        "--input-mode FastFile --no-wait"
    )


def invocation_answers(endpoint_url: str, kind: str, answers: list[dict[str, str]]) -> None:
    """What moto answers the next invocations with, in order (real-time or asynchronous)."""
    post(endpoint_url, f"/moto-api/static/sagemaker/{kind}", {"results": answers})


def real_time_answers() -> list[dict[str, str]]:
    return [{"Body": prediction(label), "ContentType": "application/json"} for label in ANSWERS]


def hosting(endpoint_url: str, work: Path) -> None:
    images = shlex.quote(str(make_image_folder(work / "images", 1)))
    model = f"--model-data {MODEL_DATA}"
    run(
        f"deploy {SERVE} {model} --endpoint scenario-rt --max-instances 4 "
        "--target-invocations-per-instance 100"
    )
    invocation_answers(endpoint_url, "endpoint-results", real_time_answers())
    run(f"invoke {AWS} --endpoint scenario-rt --payload json {images}")
    run(f"cleanup {AWS} --endpoint scenario-rt")

    run(
        f"deploy {SERVE} {model} --endpoint scenario-async --instance-type ml.m5.xlarge --async "
        "--min-instances 0 --max-instances 3"
    )
    async_answers = [{"data": prediction(label)} for label in ANSWERS]
    invocation_answers(endpoint_url, "async-endpoint-results", async_answers)
    run(f"invoke {AWS} --endpoint scenario-async {images}")
    run(f"cleanup {AWS} --endpoint scenario-async")

    run(
        f"deploy {SERVE} {model} --endpoint scenario-serverless --serverless --memory-mb 3072 "
        "--max-concurrency 5"
    )
    run(f"cleanup {AWS} --endpoint scenario-serverless")

    run(
        f"deploy {SERVE} --model-data s3://{BUCKET}/models/many --endpoint scenario-mme "
        "--multi-model --instance-type ml.m5.xlarge"
    )
    invocation_answers(endpoint_url, "endpoint-results", real_time_answers())
    run(
        f"invoke {AWS} --endpoint scenario-mme --payload json --target-model customer-b.tar.gz "
        f"{images}"
    )
    run(f"cleanup {AWS} --endpoint scenario-mme")

    # One upload at a time (--workers 1): the same order of requests in every run.
    run(
        f"transform {SERVE} {model} --input {images} --instance-count 2 "
        "--max-concurrent-transforms 3 --workers 1 --no-wait"
    )


def main() -> None:
    endpoint_url = boto3.client("s3").meta.endpoint_url
    prepare_bucket()
    with tempfile.TemporaryDirectory() as work:
        training(Path(work))
        hosting(endpoint_url, Path(work))


if __name__ == "__main__":
    main()
