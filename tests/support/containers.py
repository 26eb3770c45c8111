"""The built images, run with a Docker engine the way SageMaker runs them.

`make test-images` (docker/test-images.sh) builds the images, points DOCKER_HOST at its
private engine (no bridge network: containers use `none` or `host` and 127.0.0.1 only)
and names the images in these variables.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from launch.local import client
from serving import contract as serving_contract
from trainer import contract as training_contract

TRAIN_IMAGE_ENV = "TEST_IMAGES_TRAIN"
SERVE_IMAGE_ENV = "TEST_IMAGES_SERVE"  # the gpu variant: torch
SERVE_CPU_IMAGE_ENV = "TEST_IMAGES_SERVE_CPU"  # the cpu variant: ONNX Runtime, no torch
# The build arguments that stand in for what the build machine cannot fetch (K=V K=V ...).
STAND_INS_ENV = "TEST_IMAGES_STAND_INS"
# SageMaker's stop: SIGTERM, then SIGKILL after 30 s.
STOP_TIMEOUT_S = 30
# Where SageMaker mounts a job's folder (training) and the model (serving) in a container.
JOB_MOUNT = Path(training_contract.DEFAULT_BASE_DIR)
MODEL_MOUNT = Path(serving_contract.DEFAULT_BASE_DIR) / serving_contract.MODEL_SUBDIR


def image_from_env(name: str) -> str:
    image = os.environ.get(name)
    if not image:
        raise RuntimeError(f"{name} is not set: the container tests run under `make test-images`")
    return image


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run a docker command; returns its stdout, raises with its stderr when it fails."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"docker {args[0]} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout.strip()


def env_options(env: dict[str, str] | None) -> list[str]:
    return [option for key, value in (env or {}).items() for option in ("-e", f"{key}={value}")]


def inspect(container: str, template: str) -> str:
    return docker("inspect", "--format", template, container)


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image))


@dataclass
class ContainerServer:
    """`serve` in a detached container on the host network, reached on 127.0.0.1:port."""

    port: int
    container: str

    def post(
        self, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, str]:
        return client.post_invocation(self.port, body, content_type, headers)

    def log(self) -> str:
        result = subprocess.run(
            ["docker", "logs", self.container],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            check=False,
        )
        return result.stdout

    def running(self) -> bool:
        return inspect(self.container, "{{.State.Running}}") == "true"

    def exit_code(self) -> int:
        return int(inspect(self.container, "{{.State.ExitCode}}"))

    def wait_until_ready(self, timeout: float = 300) -> None:
        """Until it classifies an image (multi-model-server answers /ping before its
        workers have loaded the model); raise if the container exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"serve exited with code {self.exit_code()}:\n{self.tail()}")
            if client.ping(self.port) and client.probe(self.port, timeout=10):
                return
            time.sleep(0.2)
        raise TimeoutError(f"serve was not ready within {timeout:.0f} s:\n{self.tail()}")

    def wait_for_exit(self, timeout: float) -> int:
        return int(docker("wait", self.container, timeout=timeout))

    def stop(self, timeout: float) -> int:
        """`docker stop`: SIGTERM, then SIGKILL after `timeout` seconds; the exit code."""
        docker("stop", "--time", str(int(timeout)), self.container, timeout=timeout + 30)
        return self.exit_code()

    def close(self) -> list[str]:
        """Stop it as SageMaker does (`docker stop`) and remove it; returns it when it was
        still running after that (it should not be)."""
        if self.running():
            self.stop(timeout=STOP_TIMEOUT_S)
        leftovers = [f"container {self.container[:12]}"] if self.running() else []
        docker("rm", "--force", self.container)
        return leftovers

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def start_server(
    image: str, model_dir: Path, port: int, env: dict[str, str] | None = None
) -> ContainerServer:
    """`docker run IMAGE serve` as a SageMaker endpoint runs it, on the host network."""
    container = docker(
        "run", "--detach", "--network", "host",
        *env_options({serving_contract.BIND_TO_PORT_ENV: str(port), **(env or {})}),
        "--volume", f"{model_dir.resolve()}:{MODEL_MOUNT}:ro",
        image, "serve",
    )  # fmt: skip
    return ContainerServer(port, container)
