"""How the workers tell `serve` about the model: files in the server's runtime directory.

multi-model-server's /ping says "Healthy" as soon as its workers have started, before
they load the model, and a worker that fails to load is just restarted; so each worker
writes `worker_ready.<pid>` once it has loaded and warmed up the model, or the reason
why it couldn't, and `serve` waits for one or the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from serving import contract

LOAD_FAILURE_FILE = "model_load_failed.txt"
WORKER_READY_PREFIX = "worker_ready."
PRELOADED_FILE = "preloaded_seconds.txt"  # serving/preload.py: how long its imports took


def _write(name: str, text: str) -> None:
    state_dir = os.environ.get(contract.STATE_DIR_ENV)
    if state_dir:  # unset when the handler runs outside `serve` (tests, notebooks)
        (Path(state_dir) / name).write_text(text + "\n", encoding="utf-8")


def report_load_failure(reason: str) -> None:
    _write(LOAD_FAILURE_FILE, reason)


def report_ready(timings: Mapping[str, float] | None = None) -> None:
    """The model is loaded and warmed up; `timings` are seconds per start-up step."""
    _write(f"{WORKER_READY_PREFIX}{os.getpid()}", json.dumps(dict(timings or {})))


def report_preloaded(seconds: float) -> None:
    _write(PRELOADED_FILE, f"{seconds:.3f}")


def preloaded_seconds(state_dir: Path) -> float | None:
    try:
        return float((state_dir / PRELOADED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_failure(state_dir: Path) -> str | None:
    path = state_dir / LOAD_FAILURE_FILE
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def ready_workers(state_dir: Path) -> int:
    return sum(1 for _ in state_dir.glob(f"{WORKER_READY_PREFIX}*"))


def worker_timings(state_dir: Path) -> dict[int, dict[str, float]]:
    """Each ready worker's start-up steps (pid -> step -> seconds)."""
    timings = {}
    for path in sorted(state_dir.glob(f"{WORKER_READY_PREFIX}*")):
        try:
            timings[int(path.suffix[1:])] = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue  # written by another version, or being written: not worth failing for
    return timings
