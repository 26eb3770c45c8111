"""`transform` and `transform-report`: Batch Transform with the serving image, then one CSV.

One record is one image file: SplitType None sends each S3 object whole as one request
(an image cannot be split into lines), and SageMaker writes `<output>/<key>.out` for each.
The job's settings follow from the serving image (see `TransformSettings`), and the
container is told the same limits the platform applies, so the two agree.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import WaiterError

from launch.cloud import hosting, limits
from launch.cloud.data import upload_files
from launch.cloud.limits import MB
from launch.cloud.predictor import Classification, first_prediction
from launch.cloud.settings import (
    AwsTarget,
    CloudError,
    output_file,
    s3_objects,
    shown_path,
    split_s3_uri,
)
from serving import content_types
from serving.contract import (
    DEFAULT_MAX_PAYLOAD_MB,
    DEFAULT_TIMEOUT_S,
    MAX_PAYLOAD_ENV,
    MODEL_SERVER_TIMEOUT_ENV,
)

TRANSFORM_BASE = "imgcls-transform"
DEFAULT_INSTANCE = "ml.m5.xlarge"  # the CPU serving image; 4 vCPUs, one serving worker
OUT_SUFFIX = ".out"  # SageMaker's name for each input's output: <key>.out
# One image is one request, so SINGLE_RECORD is what happens; with SplitType None the
# platform does not batch records anyway (BatchStrategy needs Line, RecordIO or TFRecord).
BATCH_STRATEGY = "SingleRecord"
# A failed record fails the whole job: one retry covers a worker restart without paying
# three more timeouts for an image that cannot be classified.
DEFAULT_RETRIES = 1
CSV_FIELDS = ("file", "label", "probability")


@dataclass(frozen=True)
class TransformSettings:
    """A Batch Transform job's resources and limits.

    - `max_payload_mb`: the serving image's own request limit (6 MB, SAGEMAKER_MAX_PAYLOAD_IN_MB),
      passed to the container too; every input object must fit, as each is one request.
    - `max_concurrent`: None sizes it from the instance: two requests per serving worker
      (one worker per 4 vCPUs), so a worker computes one while the next waits in its queue,
      within MaxConcurrentTransforms x MaxPayloadInMB <= 100.
    - `invocation_timeout_s`: a request may wait behind one other in the worker's queue,
      then run; each step is bounded by the model server's 60 s timeout.
    """

    instance_type: str = DEFAULT_INSTANCE
    instance_count: int = 1
    max_payload_mb: int = DEFAULT_MAX_PAYLOAD_MB
    max_concurrent: int | None = None
    invocation_timeout_s: int = hosting.REQUESTS_PER_WORKER * DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_RETRIES

    @property
    def concurrent_transforms(self) -> int:
        if self.max_concurrent is not None:
            return self.max_concurrent
        by_budget = limits.TRANSFORM_PAYLOAD_BUDGET_MB // max(1, self.max_payload_mb)
        return max(1, min(hosting.requests_per_instance(self.instance_type), by_budget))

    def environment(self) -> dict[str, str]:
        """What the container is told: the job's payload limit and the server's timeout."""
        return {
            MAX_PAYLOAD_ENV: str(self.max_payload_mb),
            MODEL_SERVER_TIMEOUT_ENV: str(DEFAULT_TIMEOUT_S),
        }


def check_settings(settings: TransformSettings) -> None:
    """The platform's limits on the job's fields, as one-line errors before any AWS call."""
    if settings.instance_count < 1:
        raise CloudError(f"--instance-count must be at least 1, got {settings.instance_count}")
    if not 1 <= settings.max_payload_mb <= limits.TRANSFORM_MAX_PAYLOAD_MB:
        raise CloudError(
            f"--max-payload-mb must be 1 to {limits.TRANSFORM_MAX_PAYLOAD_MB}, "
            f"got {settings.max_payload_mb}"
        )
    concurrent = settings.concurrent_transforms
    if concurrent < 1 or concurrent * settings.max_payload_mb > limits.TRANSFORM_PAYLOAD_BUDGET_MB:
        raise CloudError(
            "--max-concurrent-transforms x --max-payload-mb must be 1 to "
            f"{limits.TRANSFORM_PAYLOAD_BUDGET_MB}, got {concurrent} x {settings.max_payload_mb}"
        )
    if not 1 <= settings.invocation_timeout_s <= limits.TRANSFORM_MAX_TIMEOUT_S:
        raise CloudError(
            f"--invocation-timeout must be 1 to {limits.TRANSFORM_MAX_TIMEOUT_S} seconds, "
            f"got {settings.invocation_timeout_s}"
        )


# --------------------------------------------------------------------------------------- input


def local_images(folder: Path) -> dict[str, Path]:
    """Name relative to the folder -> file, for the images under it (searched recursively)."""
    if not folder.is_dir():
        raise CloudError(f"--input {folder} is neither an s3:// prefix nor a folder")
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix.lower() in content_types.IMAGE_SUFFIXES
    }


def job_content_type(sizes: dict[str, int], where: str, max_payload_mb: int) -> str:
    """The one ContentType of the job, after refusing inputs the job would fail on.

    Every object under the prefix becomes a request, so anything that is not an image, or
    is over the payload limit, would fail the whole job after its instances have started.
    """
    if not sizes:
        raise CloudError(f"no images under {where}")
    others = sorted(
        name for name in sizes if not name.lower().endswith(content_types.IMAGE_SUFFIXES)
    )
    if others:
        raise CloudError(
            f"{len(others)} objects under {where} are not .jpg/.jpeg/.png images "
            f"(e.g. {others[0]}): every object under --input becomes a request"
        )
    too_large = sorted((size, name) for name, size in sizes.items() if size > max_payload_mb * MB)
    if too_large:
        size, name = too_large[-1]
        raise CloudError(
            f"{len(too_large)} images are over --max-payload-mb {max_payload_mb} "
            f"(largest: {name}, {size / MB:.1f} MB): raise it "
            f"(at most {limits.TRANSFORM_MAX_PAYLOAD_MB})"
        )
    kinds = {content_types.of_file(name) for name in sizes}
    # One type per job: mixed JPEG and PNG go as raw image bytes, which the image sniffs.
    return kinds.pop() if len(kinds) == 1 else content_types.X_IMAGE


def prepare_input(
    target: AwsTarget, source: str, job: str, max_payload_mb: int, workers: int
) -> tuple[str, str]:
    """The job's input prefix (uploading a local folder first) and its content type."""
    if source.startswith("s3://"):
        prefix_uri = source.rstrip("/") + "/"
        sizes = s3_objects(target.session.client("s3"), prefix_uri)
        return prefix_uri, job_content_type(sizes, prefix_uri, max_payload_mb)
    files = local_images(Path(source))
    sizes = {name: path.stat().st_size for name, path in files.items()}
    content_type = job_content_type(sizes, source, max_payload_mb)
    prefix_uri = target.s3_uri("transform", job, "input") + "/"
    _, prefix = split_s3_uri(prefix_uri)
    upload_files(target, {prefix + name: path for name, path in files.items()}, workers)
    print(f"uploaded {len(files)} images to {prefix_uri}")
    return prefix_uri, content_type


# ----------------------------------------------------------------------------------------- job


@dataclass(frozen=True)
class TransformJobPlan:
    """One Batch Transform job of the serving image, as plain data."""

    name: str  # the job's, and its model's (the job alone needs that model)
    image_uri: str
    role: str
    model_data: str
    input_uri: str
    content_type: str
    output_uri: str
    settings: TransformSettings
    batch_strategy: str = BATCH_STRATEGY


def print_job(plan: TransformJobPlan) -> None:
    settings = plan.settings
    print(
        f"transform job {plan.name}: {settings.instance_count} x {settings.instance_type}, "
        f"{settings.concurrent_transforms} requests at once per instance, "
        f"up to {settings.max_payload_mb} MB and {settings.invocation_timeout_s} s each"
    )
    print(f"  input  {plan.input_uri} ({plan.content_type})\n  output {plan.output_uri}/")


def wait_for_job(sagemaker_client: Any, job: str, poll_s: int = 30) -> str:
    """Wait until the job has ended; returns its status (Completed or Stopped)."""
    waiter = sagemaker_client.get_waiter("transform_job_completed_or_stopped")
    try:
        waiter.wait(TransformJobName=job, WaiterConfig={"Delay": poll_s, "MaxAttempts": 2880})
    except WaiterError:
        described = sagemaker_client.describe_transform_job(TransformJobName=job)
        reason = described.get("FailureReason") or "no reason given"
        raise CloudError(
            f"transform job {job} is {described['TransformJobStatus']}: {reason}"
        ) from None
    return str(sagemaker_client.describe_transform_job(TransformJobName=job)["TransformJobStatus"])


# -------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Row:
    file: str
    answer: Classification | str


def read_rows(s3: Any, output_uri: str, names: Iterable[str], workers: int) -> list[Row]:
    """Each input's top class from its .out object (the serving image's JSON)."""
    bucket, prefix = split_s3_uri(output_uri.rstrip("/") + "/")

    def read(name: str) -> Row:
        body = s3.get_object(Bucket=bucket, Key=f"{prefix}{name}{OUT_SUFFIX}")["Body"].read()
        return Row(name, first_prediction(body))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read, sorted(names)))


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_FIELDS)
        for row in rows:
            if isinstance(row.answer, Classification):
                writer.writerow([row.file, row.answer.label, f"{row.answer.probability:.4f}"])
            else:
                writer.writerow([row.file, "", ""])


def class_counts(rows: list[Row]) -> Counter[str]:
    return Counter(row.answer.label for row in rows if isinstance(row.answer, Classification))


def print_summary(rows: list[Row], counts: Counter[str], missing: list[str]) -> None:
    width = max((len(label) for label in counts), default=0)
    for label, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {label:{width}}  {count}")
    unreadable = [row for row in rows if not isinstance(row.answer, Classification)]
    if unreadable:
        first = unreadable[0]
        print(f"  {len(unreadable)} results unreadable, e.g. {first.file}: {first.answer}")
    if missing:
        print(f"  {len(missing)} images without a result, e.g. {missing[0]}")


def report(
    s3: Any, sagemaker_client: Any, job: str, csv_path: Path | None, workers: int
) -> Counter[str]:
    """Gather a transform job's .out files into one CSV (file, label, probability).

    Prints the count of each class, and the inputs that have no result. Returns the counts.
    """
    described = sagemaker_client.describe_transform_job(TransformJobName=job)
    input_uri = described["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    output_uri = described["TransformOutput"]["S3OutputPath"].rstrip("/")
    inputs = s3_objects(s3, input_uri)
    results = [
        name.removesuffix(OUT_SUFFIX)
        for name in s3_objects(s3, output_uri + "/")
        if name.endswith(OUT_SUFFIX)
    ]
    if not results:
        status = described["TransformJobStatus"]
        raise CloudError(f"no {OUT_SUFFIX} results under {output_uri}/ (job {job} is {status})")
    rows = read_rows(s3, output_uri, results, workers)
    path = output_file(csv_path, f"{job}-predictions.csv")
    write_csv(rows, path)
    counts = class_counts(rows)
    print(f"transform job {job}: {len(rows)} results for {len(inputs)} images")
    print_summary(rows, counts, sorted(set(inputs) - set(results)))
    print(f"predictions: {shown_path(path)}")
    return counts
