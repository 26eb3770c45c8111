"""Checkpoints for managed spot training: save after every epoch, resume at the next.

SageMaker syncs /opt/ml/checkpoints with checkpoint_s3_uri and restores it when an
interrupted spot job restarts. Files are written whole or not at all (temporary
file + rename), so a kill mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from trainer.storage import atomic_write, digest

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


def fingerprint(settings: dict[str, Any]) -> str:
    """Identifies the training run a checkpoint belongs to; a mismatch starts afresh."""
    return digest(settings, 16)


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / CHECKPOINT_FILE, lambda partial: torch.save(state, partial))


def load_checkpoint(directory: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != expected_fingerprint:
        log.warning(
            "checkpoint %s is from a different run (settings differ): starting afresh", path
        )
        return None
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return state
