"""Run the real `train` command (through scripts/local.py) as a process, for the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Small and fast: random weights, tiny images, few epochs.
TINY = {
    "pretrained": "false",
    "image_size": "64",
    "epochs": "2",
    "batch_size": "8",
    "num_workers": "0",
}


def train_command(data: Path, job_dir: Path, hyperparameters: dict[str, str]) -> list[str]:
    pairs = [f"--hp={key}={value}" for key, value in hyperparameters.items()]
    local = str(REPO_ROOT / "scripts" / "local.py")
    return [sys.executable, local, "train", "--data", str(data), "--job-dir", str(job_dir), *pairs]


def run_training(
    data: Path, job_dir: Path, env: dict[str, str] | None = None, **overrides: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        train_command(data, job_dir, {**TINY, **overrides}),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def write_debug_hook_config(job_dir: Path) -> Path:
    """What SageMaker writes for a DebuggerHookConfig saving the losses every step."""
    config_dir = job_dir / "input" / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    tensors = job_dir / "output" / "tensors"
    config = {
        "LocalPath": str(tensors),
        "HookParameters": {"save_interval": "1"},
        "CollectionConfigurations": [{"CollectionName": "losses"}],
    }
    (config_dir / "debughookconfig.json").write_text(json.dumps(config))
    return tensors


def failure_reason(job_dir: Path) -> str:
    return (job_dir / "output" / "failure").read_text()
