"""The serving image as a SageMaker endpoint runs it (`docker run IMAGE serve`), beyond the
serving contract tests: who it runs as, how it stops, what its labels promise."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from support import containers
from support.targets import CONTAINER, Target

pytestmark = [pytest.mark.images, pytest.mark.parametrize("target", [CONTAINER], indirect=True)]

# SageMaker's own stop: SIGTERM, then SIGKILL after 30 s; `serve` needs well under that.
STOP_LIMIT_S = 5


@pytest.fixture(scope="module")
def server(
    target: Target, backend: str, onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[containers.ContainerServer]:
    """The gpu image (torch) or the cpu image (ONNX Runtime), each left to choose (`auto`)."""
    running = target.start_server(onnx_model_dir, tmp_path_factory.mktemp("serve"), None, backend)
    assert isinstance(running, containers.ContainerServer)
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.close()


def container_processes(server: containers.ContainerServer) -> list[psutil.Process]:
    """The container's processes, seen from this machine (same user ids: no user namespace)."""
    init = psutil.Process(int(containers.inspect(server.container, "{{.State.Pid}}")))
    return [init, *init.children(recursive=True)]


def test_no_process_of_serve_runs_as_root(server: containers.ContainerServer) -> None:
    processes = container_processes(server)
    assert len(processes) > 1  # serve, the Java frontend and the model's workers
    users = {process.pid: process.uids() for process in processes}
    assert all(0 not in uids for uids in users.values()), users


def test_docker_stop_ends_serve_with_exit_0_quickly(server: containers.ContainerServer) -> None:
    """Runs last in this module: it stops the shared server."""
    started = time.monotonic()
    exit_code = server.stop(timeout=30)
    assert time.monotonic() - started < STOP_LIMIT_S
    assert exit_code == 0
    assert not server.running()
