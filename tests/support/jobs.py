"""Run the real `train` command as a process in a folder laid out like /opt/ml."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from launch.local.jobdir import layout_job_dir
from launch.local.processes import (
    installed_command,
    start_hosts,
    training_environment,
    wait_for_hosts,
)
from trainer.contract import TrainingPaths

# Small and fast: random weights, tiny images, few epochs.
TINY = {
    "pretrained": "false",
    "image_size": "64",
    "epochs": "2",
    "batch_size": "8",
    "num_workers": "0",
}


def train_tiny(
    data: Path, job_dir: Path, env: dict[str, str] | None = None, **overrides: str
) -> subprocess.CompletedProcess[str]:
    """A TINY job (with `overrides`), its output captured."""
    layout_job_dir(job_dir, data, {**TINY, **overrides})
    return subprocess.run(
        [installed_command("train")],
        env={**training_environment(job_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def start_training(data: Path, job_dir: Path, **overrides: str) -> subprocess.Popen[bytes]:
    """A TINY job in the background, in its own process group, its output discarded."""
    layout_job_dir(job_dir, data, {**TINY, **overrides})
    return subprocess.Popen(
        [installed_command("train")],
        env=training_environment(job_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def write_debug_hook_config(job_dir: Path) -> Path:
    """What SageMaker writes for a DebuggerHookConfig saving the losses every step."""
    paths = TrainingPaths(job_dir)
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    tensors = paths.output_dir / "tensors"
    config = {
        "LocalPath": str(tensors),
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
