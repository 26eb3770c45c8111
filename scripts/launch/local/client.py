"""An HTTP client for a running `serve`: /ping, /invocations, and a table of predictions."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from serving import content_types


def ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def post_invocation(
    port: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[int, bytes, str]:
    """POST /invocations; returns (status, body, response content type), errors included."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        method="POST",
        headers={"Content-Type": content_type, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def probe(port: int, timeout: float = 60) -> bool:
    """Whether the server classifies a small image (its model is loaded and working)."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "PNG")
    try:
        status, _, _ = post_invocation(port, buffer.getvalue(), content_types.PNG, timeout=timeout)
    except OSError:
        return False
    return status == 200


def classify_file(port: int, path: Path) -> tuple[int, dict[str, Any]]:
    """Send one file (type from its suffix); returns the status and the decoded JSON body."""
    status, body, _ = post_invocation(port, path.read_bytes(), content_types.of_file(path.name))
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"error": body[:200].decode(errors="replace")}


def invoke(port: int, files: Sequence[Path]) -> int:
    """Classify files with a running server and print one row per prediction."""
    print(f"{'file':40} {'status':>6}  {'label':12} {'probability':>11}  probabilities")
    failures = 0
    for path in files:
        status, answer = classify_file(port, path)
        if status != 200:
            failures += 1
            print(f"{path.name:40} {status:>6}  {answer.get('error', answer)}")
            continue
        for prediction in answer["predictions"]:
            scores = " ".join(f"{k}={v:.3f}" for k, v in prediction["probabilities"].items())
            print(
                f"{path.name:40} {status:>6}  {prediction['label']:12} "
                f"{prediction['probability']:>11.3f}  {scores}"
            )
    return 1 if failures else 0
