"""Run the containers' commands as plain processes, without Docker or AWS.

    python scripts/local.py train --data DIR --job-dir OUT [--hp key=value ...]
                                  [--hosts N] [--workers-per-host K]
    python scripts/local.py export --model-dir DIR [--data DIR]

lays OUT out exactly like /opt/ml and runs the same `train` command the training
image runs, with SAGEMAKER_BASE_DIR=OUT (with --hosts N: one such folder per host,
OUT/algo-1 ... OUT/algo-N, and one `train` per host, meeting on loopback). The other
subcommands do the same for serving and tuning; `export` is the training image's
`export-onnx` (the ONNX graphs of a model directory trained before).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launch.evaluation import job_files, print_evaluation
from launch.local import client, processes
from launch.local.jobdir import host_dirs
from launch.options import (
    USAGE_ERROR_STATUS,
    UsageError,
    check_hyperparameters,
    hyperparameter_flags,
)
from launch.search_space import DEFAULT_OBJECTIVE, OBJECTIVES
from serving.contract import BACKEND_ENV, BACKENDS
from trainer.contract import TrainingPaths

DEFAULT_PORT = processes.DEFAULT_SERVE_PORT


def add_job_arguments(parser: argparse.ArgumentParser, job_dir_help: str, hp_help: str) -> None:
    """--data, --job-dir and --hp, shared by the train and tune subcommands."""
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with train/ and valid/ (and optional test/) ImageFolders",
    )
    parser.add_argument("--job-dir", type=Path, required=True, help=job_dir_help)
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help=hp_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="run the training job locally")
    add_job_arguments(
        train_parser,
        job_dir_help="folder laid out like /opt/ml; model/ holds the artifacts",
        hp_help="a hyperparameter, as SageMaker would pass it (repeatable)",
    )
    train_parser.add_argument(
        "--hosts",
        type=int,
        default=1,
        help="hosts to emulate, each a `train` process with its own OUT/algo-N (default: 1)",
    )
    train_parser.add_argument(
        "--workers-per-host",
        type=int,
        help="workers each host starts (the workers_per_host hyperparameter; default: one "
        "per GPU, one on a CPU host)",
    )
    serve_parser = commands.add_parser("serve", help="run the serving job locally")
    serve_parser.add_argument(
        "--model-dir",
        type=Path,
        help="the training job's model/ folder (model.pt, model_config.json)",
    )
    serve_parser.add_argument(
        "--multi-model",
        action="store_true",
        help="serve as a SageMaker multi-model endpoint (with --models-dir)",
    )
    serve_parser.add_argument(
        "--models-dir",
        type=Path,
        help="--multi-model: a folder with one trained model/ folder per model name",
    )
    serve_parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to serve on (default: {DEFAULT_PORT})",
    )
    serve_parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help=f"what computes: TorchScript on torch, or ONNX Runtime ({BACKEND_ENV}; "
        "default: auto, torch where it is installed)",
    )

    invoke_parser = commands.add_parser("invoke", help="classify image files with a local server")
    invoke_parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port of the server (default: {DEFAULT_PORT})",
    )
    invoke_parser.add_argument(
        "--target-model",
        metavar="NAME",
        help="a model of a multi-model endpoint (POST /models/NAME/invoke)",
    )
    invoke_parser.add_argument(
        "files",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="images (.jpg, .png, other), .npy arrays or JSON instances",
    )
    add_tune_parser(commands)
    export_parser = commands.add_parser(
        "export", help="write the ONNX graphs of a model directory trained before"
    )
    export_parser.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="the training job's model/ folder (model.pt, model_config.json)",
    )
    export_parser.add_argument(
        "--data",
        type=Path,
        help="folder with train/ and valid/ ImageFolders to calibrate and check the int8 "
        "graph on (default: none, fp32 only)",
    )
    return parser


def add_tune_parser(commands: Any) -> None:
    tune_parser = commands.add_parser(
        "tune", help="local hyperparameter tuning over the SageMaker tuner's search space"
    )
    add_job_arguments(
        tune_parser,
        job_dir_help="where trials/, the shared feature_cache/ and the results go",
        hp_help="a fixed hyperparameter for every trial (repeatable)",
    )
    tune_parser.add_argument(
        "--trials", type=int, default=8, help="training jobs to run (default: 8)"
    )
    tune_parser.add_argument(
        "--parallel", type=int, default=1, help="jobs at once (default: 1; each job uses all cores)"
    )
    tune_parser.add_argument(
        "--objective",
        choices=sorted(OBJECTIVES),
        default=DEFAULT_OBJECTIVE,
        help=f"what to optimise (default: {DEFAULT_OBJECTIVE})",
    )
    tune_parser.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")


def train(data: Path, job_dir: Path, hyperparameters: dict[str, str], hosts: int) -> int:
    """The training job; when it succeeds, where its evaluation is and the per-class table."""
    exit_code = processes.train(data, job_dir, hyperparameters, hosts)
    if exit_code == 0:
        leader = host_dirs(job_dir, hosts)[0]
        print()
        print_evaluation(job_files(TrainingPaths(leader).output_data_dir))
    return exit_code


def serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.multi_model != (args.models_dir is not None) or args.multi_model == (
        args.model_dir is not None
    ):
        parser.error("serve needs --model-dir DIR, or --multi-model --models-dir DIR")
    env = {BACKEND_ENV: args.backend} if args.backend else {}
    with tempfile.TemporaryDirectory(prefix="local-serve-") as base_dir:
        if args.multi_model:
            return processes.serve_multi_model(args.models_dir, args.port, Path(base_dir), env)
        return processes.serve(args.model_dir, args.port, Path(base_dir), env)


def job_hyperparameters(args: argparse.Namespace) -> dict[str, str]:
    """train's and tune's hyperparameters, refused here when the job would refuse them."""
    hyperparameters = hyperparameter_flags(args.hp)
    if getattr(args, "workers_per_host", None) is not None:
        hyperparameters["workers_per_host"] = str(args.workers_per_host)
    check_hyperparameters(hyperparameters)
    return hyperparameters


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.hosts < 1:
        parser.error("--hosts takes a number >= 1")
    try:
        hyperparameters = job_hyperparameters(args) if args.command in ("train", "tune") else {}
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR_STATUS
    if args.command == "train":
        return train(args.data, args.job_dir, hyperparameters, args.hosts)
    if args.command == "serve":
        return serve(parser, args)
    if args.command == "invoke":
        return client.invoke(args.port, args.files, args.target_model)
    if args.command == "tune":
        from launch.local.tuning import tune  # noqa: PLC0415 - imports optuna

        return tune(
            args.data,
            args.job_dir,
            args.trials,
            args.parallel,
            args.objective,
            hyperparameters,
            args.seed,
        )
    if args.command == "export":
        from trainer.export_cli import run  # noqa: PLC0415 - imports torch and onnxruntime

        return run(args.model_dir, args.data)
    raise AssertionError(args.command)
