"""An HTTP client for a running `serve`: /ping, /invocations, and a table of predictions."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
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


def invocation_path(target_model: str | None = None) -> str:
    """/invocations, or a multi-model endpoint's /models/<name>/invoke."""
    if target_model is None:
        return "/invocations"
    return f"/models/{urllib.parse.quote(target_model, safe='')}/invoke"


def post_invocation(
    port: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
    target_model: str | None = None,
) -> tuple[int, bytes, str]:
    """POST /invocations (or a target model's invoke); returns (status, body, response
    content type), errors included."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{invocation_path(target_model)}",
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


def classify_file(
    port: int, path: Path, target_model: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Send one file (type from its suffix); returns the status and the decoded JSON body."""
    status, body, _ = post_invocation(
        port, path.read_bytes(), content_types.of_file(path.name), target_model=target_model
    )
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"error": body[:200].decode(errors="replace")}


def invoke(port: int, files: Sequence[Path], target_model: str | None = None) -> int:
    """Classify files with a running server (or one model of a multi-model endpoint) and
    print one row per prediction."""
    print(f"{'file':40} {'status':>6}  {'label':12} {'probability':>11}  probabilities")
    failures = 0
    for path in files:
        status, answer = classify_file(port, path, target_model)
        if status != 200:
            failures += 1
            reason = answer.get("error") or answer.get("message") or answer  # ours, or MMS's
            print(f"{path.name:40} {status:>6}  {reason}")
            continue
        for prediction in answer["predictions"]:
            scores = " ".join(f"{k}={v:.3f}" for k, v in prediction["probabilities"].items())
            print(
                f"{path.name:40} {status:>6}  {prediction['label']:12} "
                f"{prediction['probability']:>11.3f}  {scores}"
            )
    return 1 if failures else 0


def load_model(port: int, name: str, model_dir: Path, timeout: float = 300) -> tuple[int, str]:
    """POST /models on a multi-model endpoint, as SageMaker does before a model's first
    request; returns the status and the server's message."""
    document = {"model_name": name, "url": str(model_dir.resolve())}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/models",
        data=json.dumps(document).encode(),
        method="POST",
        headers={"Content-Type": content_types.JSON},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _message(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _message(error.read())


def _message(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    if not isinstance(document, dict):
        return str(document)
    return str(document.get("status") or document.get("message") or document.get("error"))
