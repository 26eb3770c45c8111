"""Where the launch CLI's AWS settings come from: region, credentials, bucket, role, images.

Every setting resolves the same way: a command-line flag, then an environment variable,
then a default. Whatever is missing becomes a one-line `CloudError` that says what to set,
instead of a traceback from deep inside boto3 or the SageMaker SDK.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

# Relative to the working directory, which is the repository root when the CLI runs as
# `python scripts/cloud.py`.
IMAGES_FILE = Path("build") / "images.json"  # written by build_and_push.sh
IMAGES_FILE_ENV = "IMAGES_FILE"  # build_and_push.sh's override of that path
OUTPUT_DIR = Path("build") / "cloud"  # what the CLI writes locally (JSON, plots)
DEFAULT_PREFIX = "image-classifier"
ROLE_ENV = "SAGEMAKER_ROLE"
BUCKET_ENV = "SAGEMAKER_BUCKET"
PREFIX_ENV = "SAGEMAKER_PREFIX"
LOCAL_INSTANCE_TYPES = ("local", "local_gpu")


class CloudError(Exception):
    """A user error: the CLI prints its message as one line and exits with status 1."""


@dataclass(frozen=True)
class AwsTarget:
    """The account, region and S3 location that one CLI run works in."""

    session: boto3.Session
    region: str
    bucket: str
    prefix: str

    def s3_uri(self, *parts: str) -> str:
        return "s3://" + "/".join([self.bucket, self.prefix, *parts])

    @property
    def data_uri(self) -> str:
        """Where `upload` puts the channels and `tune`/`train` read them."""
        return self.s3_uri("data")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); anything else is a CloudError."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise CloudError(f"{uri} is not an s3://BUCKET/KEY URI")
    return bucket, key


def s3_object(s3: Any, uri: str) -> bytes | None:
    """The object's bytes, or None where it does not exist (yet)."""
    bucket, key = split_s3_uri(uri)
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "404"):
            return None
        raise


def s3_objects(s3: Any, prefix_uri: str) -> dict[str, int]:
    """Name relative to the prefix -> size, for every object under an s3:// prefix."""
    bucket, prefix = split_s3_uri(prefix_uri)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {
        item["Key"].removeprefix(prefix): int(item["Size"])
        for page in pages
        for item in page.get("Contents", [])
    }


def boto_session(region: str | None) -> boto3.Session:
    """A boto3 session with a region and credentials, or a CloudError naming what to set."""
    session = boto3.Session(region_name=region) if region else boto3.Session()
    if not session.region_name:
        raise CloudError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
    if session.get_credentials() is None:
        raise CloudError(
            "no AWS credentials: run `aws configure`, or set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return session


def default_bucket_name(session: boto3.Session) -> str:
    """The SDK's `sagemaker-{region}-{account}` bucket name.

    Computed here with boto3 because `sagemaker.Session.default_bucket()` asks STS at an
    explicit regional endpoint that ignores AWS_ENDPOINT_URL (so it can't reach an emulator).
    """
    try:
        account = session.client("sts").get_caller_identity()["Account"]
    except (BotoCoreError, ClientError) as error:
        raise CloudError(
            f"cannot find the default bucket ({error}): pass --bucket NAME or set {BUCKET_ENV}"
        ) from None
    return f"sagemaker-{session.region_name}-{account}"


def resolve_target(region: str | None, bucket: str | None, prefix: str | None) -> AwsTarget:
    session = boto_session(region)
    bucket = bucket or os.environ.get(BUCKET_ENV) or default_bucket_name(session)
    prefix = (prefix or os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX).strip("/")
    return AwsTarget(session=session, region=str(session.region_name), bucket=bucket, prefix=prefix)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def ensure_bucket(target: AwsTarget) -> None:
    """Create the bucket when it does not exist yet (as the SDK does for its default bucket)."""
    s3 = target.session.client("s3")
    try:
        s3.head_bucket(Bucket=target.bucket)
        return
    except ClientError as error:
        if error_code(error) not in ("404", "NoSuchBucket"):
            raise CloudError(
                f"bucket {target.bucket} is not accessible ({error_code(error)}): "
                f"pass --bucket NAME or set {BUCKET_ENV}"
            ) from None
    if target.region == "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
        s3.create_bucket(Bucket=target.bucket)
    else:
        s3.create_bucket(
            Bucket=target.bucket,
            CreateBucketConfiguration={"LocationConstraint": target.region},
        )
    print(f"created bucket s3://{target.bucket}")


def require_bucket(target: AwsTarget) -> None:
    """For commands that read from the bucket: it must exist already."""
    try:
        target.session.client("s3").head_bucket(Bucket=target.bucket)
    except ClientError as error:
        raise CloudError(
            f"bucket {target.bucket} not found or not accessible ({error_code(error)}): "
            f"run `cloud.py upload` first, or pass --bucket NAME or set {BUCKET_ENV}"
        ) from None


def require_role(role: str | None) -> str:
    role = role or os.environ.get(ROLE_ENV)
    if not role:
        raise CloudError(
            f"no IAM role: pass --role ARN or set {ROLE_ENV} "
            "(a role SageMaker can assume, with S3 and ECR read access)"
        )
    return role


def default_images_file() -> Path:
    return Path(os.environ.get(IMAGES_FILE_ENV) or IMAGES_FILE)


def image_uri(kind: str, override: str | None, images_file: Path) -> str:
    """The `train` or `serve` image URI: the flag, else build_and_push.sh's images file."""
    if override:
        return override
    try:
        uri = json.loads(images_file.read_text()).get(kind)
    except (OSError, ValueError, AttributeError):
        uri = None
    if not uri:
        raise CloudError(
            f"no {kind} image URI in {images_file}: run ./build_and_push.sh or pass --{kind}-image"
        )
    return str(uri)


def unique_name(base: str) -> str:
    """`base-YYMMDD-HHMMSS-xxxx`: unique, and short enough for a tuning job (32 characters)."""
    return f"{base}-{time.strftime('%y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def output_file(path: Path | None, name: str) -> Path:
    """Where to write a local result: the flag's path, else build/cloud/NAME."""
    return path or OUTPUT_DIR / name


def shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
