"""`upload`: split a local data set into channels and upload them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from launch.cloud import data
from launch.cloud.commands.common import Aws, Command, Table, add_aws_flags


def add_flags(parser: argparse.ArgumentParser) -> None:
    defaults = data.SplitFractions()
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="train/valid/test ImageFolders, Kaggle train/<class> (+ test/<class>) folders, "
        "or flat cat.N.jpg/dog.N.jpg files",
    )
    parser.add_argument(
        "--valid-fraction",
        type=float,
        default=defaults.valid,
        help="share of each class held out for validation when splitting "
        f"(default: {defaults.valid})",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=defaults.test,
        help="share of each class held out for test when there is no test set "
        f"(default: {defaults.test})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help=f"seed of the split (default: {defaults.seed})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=data.DEFAULT_WORKERS,
        help=f"parallel uploads (default: {data.DEFAULT_WORKERS})",
    )


@dataclass(frozen=True)
class UploadPlan:
    split: data.Split  # channel -> class -> files
    workers: int


def plan(args: argparse.Namespace) -> UploadPlan:
    fractions = data.SplitFractions(args.valid_fraction, args.test_fraction, args.seed)
    return UploadPlan(data.plan_split(args.data, fractions), args.workers)


def run(plan: UploadPlan, aws: Aws) -> int:
    data.upload(aws.target, plan.split, plan.workers)
    return 0


COMMANDS: Table = [
    Command(
        "upload",
        "split a local data set into channels and upload them",
        (add_aws_flags, add_flags),
        plan,
        run,
    )
]
