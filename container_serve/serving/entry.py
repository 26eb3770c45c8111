"""multi-model-server's entry point for this project: `serving.entry:handle`.

It only imports the handler, on the first call: if that import fails (a broken torch
install, say), the worker still reports the reason to `serve`, which exits with it
instead of waiting while multi-model-server restarts the worker again and again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serving.state import report_load_failure

Handle = Callable[[list[dict[str, Any]] | None, Any], list[bytes] | None]
_handle: Handle | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    global _handle  # noqa: PLW0603 - the handler is imported once per worker, on first call
    if _handle is None:
        try:
            from serving.handler import handle as loaded  # noqa: PLC0415
        except Exception as error:
            report_load_failure(f"cannot import the handler: {error!r}")
            raise
        _handle = loaded
    return _handle(data, context)
