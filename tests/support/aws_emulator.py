"""A local AWS API emulator (moto in server mode) on loopback for the launch-code tests.

The code under test talks to it through AWS_ENDPOINT_URL, exactly as it would talk
to AWS: nothing of this project is mocked.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launch.local.processes import free_port, stop_server


def emulator_env(endpoint: str) -> dict[str, str]:
    """Environment that points boto3, the AWS CLI and the SageMaker SDK at the emulator."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


@contextmanager
def moto_server(timeout_s: float = 30.0) -> Iterator[str]:
    """Start moto's server on a free loopback port; yield its URL; stop it."""
    port = free_port()
    # moto with the answers SDK 3.x can read back (support.emulator_server says which).
    tests = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "support.emulator_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": path},
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        stop_server(process, timeout=10)


# X-Amz-Target prefixes of the JSON services the launch CLI calls, as moto records them.
SAGEMAKER = "SageMaker"
AUTOSCALING = "AnyScaleFrontendService"  # Application Auto Scaling
CLOUDWATCH = "GraniteServiceVersion20100801"


class Emulator:
    """moto on loopback, recording every request it receives (all services)."""

    def __init__(self, endpoint: str, recording: Path) -> None:
        self.endpoint = endpoint
        self.recording = recording

    def post(self, path: str, payload: dict[str, Any] | None = None) -> None:
        data = json.dumps(payload or {}).encode()
        request = urllib.request.Request(f"{self.endpoint}{path}", data=data, method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def recorded(self) -> list[dict[str, Any]]:
        """Every recorded request: `url`, `method`, `headers` and the raw `body` bytes."""
        entries = []
        for line in self.recording.read_text().splitlines():
            entry = json.loads(line)
            body = entry["body"] or ""
            entry["body"] = base64.b64decode(body) if entry["body_encoded"] else body.encode()
            entries.append(entry)
        return entries

    def requests(self, operation: str, service: str = SAGEMAKER) -> list[dict[str, Any]]:
        """The JSON bodies of the recorded `service.operation` calls, in order."""
        return [
            json.loads(entry["body"])
            for entry in self.recorded()
            if entry["headers"].get("X-Amz-Target") == f"{service}.{operation}"
        ]

    def calls_to(self, url_suffix: str) -> list[dict[str, Any]]:
        """Recorded REST calls (sagemaker-runtime) whose URL ends so, e.g. `/invocations`."""
        return [entry for entry in self.recorded() if entry["url"].endswith(url_suffix)]


@contextmanager
def recording_emulator(recording: Path) -> Iterator[Emulator]:
    """moto with its request recorder on; the caller points AWS_ENDPOINT_URL at it.

    MOTO_RECORDER_FILEPATH must already be `recording` in this process's environment:
    moto reads it when it starts.
    """
    with moto_server() as endpoint:
        emulator = Emulator(endpoint, recording)
        emulator.post("/moto-api/recorder/start-recording")
        yield emulator
