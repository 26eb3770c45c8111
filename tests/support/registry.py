"""A throwaway image registry on 127.0.0.1 (Debian's docker-registry, the CNCF
distribution registry), standing in for ECR's registry: no TLS, no authentication."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from launch.local.processes import free_port, stop_server

# What a registry may answer for a manifest; only the first two are a single image.
IMAGE_MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
LIST_MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def local_registry(work_dir: Path, timeout: float = 30) -> Iterator[str]:
    """A registry whose blobs live under work_dir (deleted at the end); yields host:port."""
    port = free_port()
    config = work_dir / "config.json"  # YAML is a superset of JSON
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(work_dir / "data")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    with (work_dir / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while not answers(f"http://127.0.0.1:{port}/v2/"):
            if process.poll() is not None or time.monotonic() > deadline:
                log_text = (work_dir / "registry.log").read_text(errors="replace")
                raise RuntimeError(f"the registry did not start:\n{log_text[-2000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        stop_server(process, timeout=30)
        shutil.rmtree(work_dir / "data", ignore_errors=True)


def manifest(registry: str, repository: str, reference: str) -> tuple[str, str, dict]:
    """GET a manifest as a client that accepts every kind would:
    (media type, digest, manifest)."""
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{reference}",
        headers={"Accept": ", ".join((*IMAGE_MANIFEST_TYPES, *LIST_MANIFEST_TYPES))},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return (
            response.headers["Content-Type"],
            response.headers["Docker-Content-Digest"],
            json.loads(response.read()),
        )
