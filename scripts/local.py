"""Run the containers' commands as plain processes, without Docker or AWS.

    python scripts/local.py train --data DIR --job-dir OUT [--hp key=value ...]

lays OUT out exactly like /opt/ml and runs the same `train` command the training
image runs, with SAGEMAKER_BASE_DIR=OUT. The other subcommands do the same for
serving and tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_CODE = REPO_ROOT / "container_train"
TRAINING_MODULE = "trainer.job:main"  # the training image sets the same SAGEMAKER_TRAINING_MODULE
CHANNELS = ("train", "valid", "test")
LOCAL_HOST = "algo-1"


def venv_command(name: str) -> str:
    """A console script installed next to this Python (e.g. `train`, `serve`)."""
    return str(Path(sys.executable).with_name(name))


def parse_hyperparameters(pairs: Sequence[str]) -> dict[str, str]:
    hyperparameters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--hp takes key=value, got {pair!r}")
        hyperparameters[key] = value
    return hyperparameters


def layout_job_dir(job_dir: Path, data_dir: Path, hyperparameters: dict[str, str]) -> None:
    """Write OUT/input/{config,data} as SageMaker does; keep checkpoints so a rerun resumes."""
    config_dir = job_dir / "input" / "config"
    data_root = job_dir / "input" / "data"
    config_dir.mkdir(parents=True, exist_ok=True)
    data_root.mkdir(parents=True, exist_ok=True)
    channels = [name for name in CHANNELS if (data_dir / name).is_dir()]
    for name in channels:
        link = data_root / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((data_dir / name).resolve(), target_is_directory=True)
    input_config = {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
        for name in channels
    }
    resource_config = {
        "current_host": LOCAL_HOST,
        "hosts": [LOCAL_HOST],
        "network_interface_name": "lo",
    }
    # SageMaker passes every hyperparameter value as a string.
    written = {key: str(value) for key, value in hyperparameters.items()}
    (config_dir / "hyperparameters.json").write_text(json.dumps(written, indent=2))
    (config_dir / "inputdataconfig.json").write_text(json.dumps(input_config, indent=2))
    (config_dir / "resourceconfig.json").write_text(json.dumps(resource_config, indent=2))
    for stale in ("failure", "success"):
        (job_dir / "output" / stale).unlink(missing_ok=True)


def training_environment(job_dir: Path) -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(TRAIN_CODE), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(job_dir.resolve()),
        "SAGEMAKER_TRAINING_MODULE": TRAINING_MODULE,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
    }


def train(data: Path, job_dir: Path, hyperparameters: dict[str, str]) -> int:
    """Run one training job; its log streams to this terminal. Returns its exit code."""
    for required in ("train", "valid"):
        if not (data / required).is_dir():
            print(f"note: {data / required} is missing; the job will report it", file=sys.stderr)
    layout_job_dir(job_dir, data, hyperparameters)
    completed = subprocess.run(
        [venv_command("train")], check=False, env=training_environment(job_dir)
    )
    return completed.returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="run the training job locally")
    train_parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with train/ and valid/ (and optional test/) ImageFolders",
    )
    train_parser.add_argument(
        "--job-dir",
        type=Path,
        required=True,
        help="folder laid out like /opt/ml; model/ holds the artifacts",
    )
    train_parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter, as SageMaker would pass it (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return train(args.data, args.job_dir, parse_hyperparameters(args.hp))
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
