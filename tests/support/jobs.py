"""Run the real `train` command in a folder laid out like /opt/ml."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from launch.local.processes import start_hosts, wait_for_hosts
from support.targets import ProcessTarget, RunningJob, Target
from trainer.contract import TrainingPaths, read_hyperparameters
from trainer.hyperparameters import parse_hyperparameters
from trainer.job import run

# Small and fast: random weights, tiny images, few epochs, no ONNX graphs (the tests of
# the ONNX step turn them on).
TINY = {
    "pretrained": "false",
    "image_size": "64",
    "epochs": "2",
    "batch_size": "8",
    "num_workers": "0",
    "onnx": "false",
}


def run_in_process(job_dir: Path) -> None:
    """The job in JOB_DIR as `train` runs it with one worker: in this process."""
    paths = TrainingPaths(job_dir)
    run(paths, parse_hyperparameters(read_hyperparameters(paths)))


def train_tiny(
    data: Path,
    job_dir: Path,
    env: dict[str, str] | None = None,
    target: Target | None = None,
    **overrides: str,
) -> subprocess.CompletedProcess[str]:
    """A TINY job (with `overrides`) as a process, or on `target`; its output captured.
    `env` adds environment variables to the job's."""
    return (target or ProcessTarget()).train(data, job_dir, {**TINY, **overrides}, env)


def start_training(
    data: Path, job_dir: Path, target: Target | None = None, **overrides: str
) -> RunningJob:
    """A TINY job in the background, its output discarded."""
    return (target or ProcessTarget()).start_training(data, job_dir, {**TINY, **overrides})


def train_model(data: Path, job_dir: Path, target: Target | None = None) -> Path:
    """A model from the real training job (on `target`): tiny, pretrained off, one epoch."""
    hyperparameters = {"pretrained": "false", "image_size": "64", "epochs": "1"}
    completed = (target or ProcessTarget()).train(data, job_dir, hyperparameters)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return TrainingPaths(job_dir).model_dir


def write_debug_hook_config(job_dir: Path, seen_as: Path | None = None) -> Path:
    """What SageMaker writes for a DebuggerHookConfig saving the losses every step; the job
    sees JOB_DIR as `seen_as` (a container's /opt/ml). Returns where the tensors land."""
    paths = TrainingPaths(job_dir)
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    tensors = paths.output_dir / "tensors"
    config = {
        "LocalPath": str(TrainingPaths(seen_as or job_dir).output_dir / "tensors"),
        "HookParameters": {"save_interval": "1"},
        "CollectionConfigurations": [{"CollectionName": "losses"}],
    }
    paths.debug_hook_config_file.write_text(json.dumps(config))
    return tensors


def failure_reason(job_dir: Path) -> str:
    return TrainingPaths(job_dir).failure_file.read_text()


def history(job_dir: Path) -> list[dict[str, Any]]:
    """The job's per-epoch metrics, without the timings."""
    rows = json.loads((TrainingPaths(job_dir).output_data_dir / "metrics.json").read_text())
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def start_tiny_hosts(
    data: Path, job_dir: Path, hosts: int, **overrides: str
) -> list[subprocess.Popen[bytes]]:
    """A TINY job on `hosts` hosts (JOB/algo-N), each `train` in its own process group,
    their output in JOB/hosts.log."""
    job_dir.mkdir(parents=True, exist_ok=True)
    with (job_dir / "hosts.log").open("ab") as log:  # each process keeps its own copy
        return start_hosts(
            data,
            job_dir,
            {**TINY, **overrides},
            hosts,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def train_tiny_hosts(data: Path, job_dir: Path, hosts: int, **overrides: str) -> int:
    """A TINY job on `hosts` hosts, run to the end; the job's exit code."""
    return wait_for_hosts(start_tiny_hosts(data, job_dir, hosts, **overrides))


def host_log(job_dir: Path) -> str:
    return (job_dir / "hosts.log").read_text(errors="replace")
