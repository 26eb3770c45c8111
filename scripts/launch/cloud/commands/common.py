"""What the commands share: a command's entry in the table, the AWS target resolved once,
and the flag groups several commands take."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from launch.cloud import settings
from launch.cloud.settings import AwsTarget

Plan = TypeVar("Plan")
AddFlags = Callable[[argparse.ArgumentParser], None]


class Aws:
    """The AWS target of one run (--region, --bucket, --prefix), resolved when a handler
    first needs it, and only once: resolving may ask STS for the default bucket."""

    def __init__(self, region: str | None, bucket: str | None, prefix: str | None) -> None:
        self.region, self.bucket, self.prefix = region, bucket, prefix

    @functools.cached_property
    def target(self) -> AwsTarget:
        return settings.resolve_target(self.region, self.bucket, self.prefix)


@dataclass(frozen=True)
class Command(Generic[Plan]):
    """One command: its flags, its plan (no AWS call: every refusal a flag can earn comes
    from here) and its handler, which returns the exit status."""

    name: str
    help: str
    flags: tuple[AddFlags, ...]  # the shared groups first, then the command's own
    plan: Callable[[argparse.Namespace], Plan]
    run: Callable[[Plan, Aws], int]


def add_aws_flags(parser: argparse.ArgumentParser) -> None:
    """Every command's: where in AWS it works."""
    group = parser.add_argument_group("AWS")
    group.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION or the profile's)")
    group.add_argument(
        "--bucket",
        help=f"S3 bucket (default: {settings.BUCKET_ENV}, else sagemaker-REGION-ACCOUNT)",
    )
    group.add_argument(
        "--prefix",
        help=f"S3 key prefix (default: {settings.PREFIX_ENV}, else {settings.DEFAULT_PREFIX})",
    )


def add_sagemaker_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the commands that create SageMaker jobs or endpoints."""
    group = parser.add_argument_group("SageMaker")
    group.add_argument("--role", help=f"IAM role ARN for SageMaker (default: {settings.ROLE_ENV})")
    group.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the job or endpoint has finished or is InService (default: wait)",
    )
    group.add_argument(
        "--images-file",
        type=Path,
        default=settings.default_images_file(),
        help="image URIs written by build_and_push.sh (default: $IMAGES_FILE, "
        "else build/images.json in the working directory; build_and_push.sh writes it in the "
        "repository's build/)",
    )
    group.add_argument(
        "--local",
        nargs="?",
        const=settings.LOCAL_INSTANCE_TYPES[0],
        choices=settings.LOCAL_INSTANCE_TYPES,
        help="SageMaker local mode on this machine's Docker: local (CPU) or local_gpu",
    )


def given(args: argparse.Namespace, *names: str) -> list[str]:
    """The flags among `names` (argparse dests) that were set on the command line."""
    return ["--" + name.replace("_", "-") for name in names if getattr(args, name) is not None]


Table = list[Command[Any]]
