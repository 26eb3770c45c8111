"""Files the job writes for later jobs to trust: written whole or not at all, and named
by a digest of what they depend on."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def digest(payload: dict[str, Any], length: int) -> str:
    """A stable hex digest of a JSON-able dict (key order does not matter)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write` fills a temporary file that then replaces `path`: a kill mid-write leaves
    the previous file (or none), never a truncated one."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(partial)
    partial.replace(path)
