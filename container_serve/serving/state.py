"""How the workers tell `serve` about the model: files in the server's runtime directory.

multi-model-server's /ping says "Healthy" as soon as its workers have started, before
they load the model, and a worker that fails to load is just restarted; so each worker
writes `worker_ready.<pid>` once it has loaded and warmed up the model, or the reason
why it couldn't, and `serve` waits for one or the other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from serving import contract

LOAD_FAILURE_FILE = "model_load_failed.txt"
WORKER_READY_PREFIX = "worker_ready."
MODEL_SLOTS_DIR = "model_slots"  # multi-model: <name>.<pid> per loaded model's worker


def _write(name: str, text: str) -> None:
    state_dir = os.environ.get(contract.STATE_DIR_ENV)
    if state_dir:  # unset when the handler runs outside `serve` (tests, notebooks)
        (Path(state_dir) / name).write_text(text + "\n", encoding="utf-8")


def report_load_failure(reason: str) -> None:
    _write(LOAD_FAILURE_FILE, reason)


def report_ready(timings: Mapping[str, float] | None = None) -> None:
    """The model is loaded and warmed up; `timings` are seconds per start-up step."""
    _write(f"{WORKER_READY_PREFIX}{os.getpid()}", json.dumps(dict(timings or {})))


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_slots(slots: Path) -> list[Path]:
    """Slots whose worker still runs: multi-model-server unloads a model by stopping its
    worker, so a stopped worker's slot is free again without any clean-up."""
    return [
        path
        for path in slots.glob("*.*")
        if path.suffix[1:].isdigit() and _alive(int(path.suffix[1:]))
    ]


@contextlib.contextmanager
def model_slot(model_name: str, limit: int) -> Iterator[None]:
    """Take one of `limit` model slots for this worker while its model loads and serves;
    MemoryError (multi-model-server's 507) when all are taken. Without a state folder
    (outside `serve`) there is no limit."""
    state_dir = os.environ.get(contract.STATE_DIR_ENV)
    if not state_dir:
        yield
        return
    slots = Path(state_dir) / MODEL_SLOTS_DIR
    slots.mkdir(exist_ok=True)
    mine = slots / f"{model_name}.{os.getpid()}"
    with (slots / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # count and take a slot as one step
        taken = len(live_slots(slots))
        if taken >= limit:
            raise MemoryError(
                f"{taken} models are loaded, the most this endpoint holds "
                f"({contract.MAX_MODELS_ENV}={limit}): unload one first"
            )
        mine.write_text("loading\n", encoding="utf-8")
    try:
        yield
    except BaseException:
        mine.unlink(missing_ok=True)
        raise
