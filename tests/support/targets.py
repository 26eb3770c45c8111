"""Where a contract test runs `train` and `serve`: as processes of this environment, or in
the built images (`make test-images`) as SageMaker runs them.

The same test then holds both to the same contract. The process target needs nothing
but this venv; the container target, the images named by support.containers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from launch.local.jobdir import LOCAL_HOST, layout_job_dir
from launch.local.processes import (
    free_port,
    installed_command,
    run_training,
    training_environment,
)
from serving.contract import BACKEND_ENV, ONNX, TORCH
from support import containers, servers
from trainer.contract import TrainingPaths

PROCESS = "process"
CONTAINER = "container"
# For a test that only a process can run (it looks at the processes `serve` starts, ...).
PROCESS_ONLY = pytest.mark.parametrize("target", [PROCESS], indirect=True)
TIMEOUT_S = 600


class Server(Protocol):
    port: int

    def post(
        self, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, str]: ...
    def log(self) -> str: ...
    def wait_until_ready(self, timeout: float = 300) -> None: ...
    def wait_for_exit(self, timeout: float) -> int: ...
    def close(self) -> list[str]: ...


class RunningJob(Protocol):
    def running(self) -> bool: ...
    def kill(self) -> None: ...


class Target(Protocol):
    name: str

    def base_dir(self, job_dir: Path) -> Path:
        """The job folder as the job sees it (where SAGEMAKER_BASE_DIR points)."""
        ...

    def train(
        self,
        data: Path,
        job_dir: Path,
        hyperparameters: dict[str, str],
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A training job on DATA's channels in JOB_DIR; its output captured."""
        ...

    def start_training(
        self, data: Path, job_dir: Path, hyperparameters: dict[str, str]
    ) -> RunningJob: ...

    def start_server(
        self,
        model_dir: Path,
        work_dir: Path,
        env: dict[str, str] | None = None,
        backend: str = TORCH,
    ) -> Server:
        """`serve` on `backend`: a process told so (SERVING_BACKEND), or the image that
        has it (the gpu image torch, the cpu image ONNX Runtime), left to choose (`auto`)."""
        ...

    def export_onnx(self, model_dir: Path, data: Path) -> subprocess.CompletedProcess[str]:
        """The ONNX graphs of MODEL_DIR, calibrated and checked on DATA; output captured."""
        ...


# ---- process ----


@dataclass
class ProcessJob:
    process: subprocess.Popen[bytes]

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the job and every process it started (its own process group)."""
        if self.running():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class ProcessTarget:
    name = PROCESS

    def base_dir(self, job_dir: Path) -> Path:
        return job_dir

    def train(
        self,
        data: Path,
        job_dir: Path,
        hyperparameters: dict[str, str],
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_training(
            data, job_dir, hyperparameters, env, capture_output=True, text=True, timeout=TIMEOUT_S
        )

    def start_training(
        self, data: Path, job_dir: Path, hyperparameters: dict[str, str]
    ) -> ProcessJob:
        layout_job_dir(job_dir, data, hyperparameters)
        process = subprocess.Popen(
            [installed_command("train")],
            env=training_environment(job_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return ProcessJob(process)

    def start_server(
        self,
        model_dir: Path,
        work_dir: Path,
        env: dict[str, str] | None = None,
        backend: str = TORCH,
    ) -> servers.Server:
        return servers.start(model_dir, work_dir, {BACKEND_ENV: backend, **(env or {})})

    def export_onnx(self, model_dir: Path, data: Path) -> subprocess.CompletedProcess[str]:
        """`imgcls-local export`, which calls what the training image's `export-onnx` does."""
        command = [installed_command("imgcls-local"), "export"]
        return subprocess.run(
            [*command, "--model-dir", str(model_dir), "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )


# ---- container ----


@dataclass
class ContainerJob:
    client: subprocess.Popen[bytes]  # `docker run`, attached: it ends with the container
    name: str

    def running(self) -> bool:
        return self.client.poll() is None

    def kill(self) -> None:
        """`docker kill`: SIGKILL, as when a spot instance is taken back."""
        if self.running():
            containers.docker("kill", self.name, check=False)
        self.client.wait(timeout=60)


@dataclass(frozen=True)
class ContainerTarget:
    train_image: str | None  # None: TEST_IMAGES_ONLY built a serving image alone
    serve_images: dict[str, str]  # backend -> the serving image that has it
    name: str = CONTAINER

    def base_dir(self, job_dir: Path) -> Path:
        return containers.JOB_MOUNT

    def train(
        self,
        data: Path,
        job_dir: Path,
        hyperparameters: dict[str, str],
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        self._lay_out(data, job_dir, hyperparameters)
        return subprocess.run(
            self._run_command(job_dir, "--rm", *containers.env_options(env)),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    def start_training(
        self, data: Path, job_dir: Path, hyperparameters: dict[str, str]
    ) -> ContainerJob:
        self._lay_out(data, job_dir, hyperparameters)
        name = f"train-{uuid.uuid4().hex[:12]}"
        client = subprocess.Popen(
            self._run_command(job_dir, "--rm", "--name", name),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return ContainerJob(client, name)

    def start_server(
        self,
        model_dir: Path,
        work_dir: Path,
        env: dict[str, str] | None = None,
        backend: str = TORCH,
    ) -> containers.ContainerServer:
        if backend not in self.serve_images:
            pytest.skip(f"no serving image with the {backend} backend was built")
        return containers.start_server(self.serve_images[backend], model_dir, free_port(), env)

    def export_onnx(self, model_dir: Path, data: Path) -> subprocess.CompletedProcess[str]:
        """`export-onnx` in the training image, the model and data mounted, no network."""
        data_mount = containers.JOB_MOUNT / "input" / "data"
        model_mount = TrainingPaths(containers.JOB_MOUNT).model_dir
        return subprocess.run(
            [
                "docker", "run", "--rm", "--network", "none",
                "--volume", f"{model_dir.resolve()}:{model_mount}",
                "--volume", f"{data.resolve()}:{data_mount}:ro",
                self.train_image, "export-onnx",
                "--model-dir", str(model_mount), "--data", str(data_mount),
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )  # fmt: skip

    def _run_command(self, job_dir: Path, *options: str) -> list[str]:
        """`docker run` as SageMaker runs a job with network isolation: the job folder
        mounted at /opt/ml, no network but loopback, where the host name resolves."""
        if self.train_image is None:
            pytest.skip("no training image was built")
        return [
            "docker", "run", *options, "--network", "none",
            "--add-host", f"{LOCAL_HOST}:127.0.0.1",
            "--volume", f"{job_dir.resolve()}:{containers.JOB_MOUNT}",
            self.train_image, "train",
        ]  # fmt: skip

    @staticmethod
    def _lay_out(data: Path, job_dir: Path, hyperparameters: dict[str, str]) -> None:
        """The job folder with real channel folders: a link to a path of this machine
        would point nowhere inside the container."""
        paths = TrainingPaths(job_dir)
        if paths.input_data_dir.is_dir():  # a rerun: copies of the last run's channels
            for channel in paths.input_data_dir.iterdir():
                if channel.is_dir() and not channel.is_symlink():
                    shutil.rmtree(channel)
        layout_job_dir(job_dir, data, hyperparameters)
        for channel in paths.input_data_dir.iterdir():
            if channel.is_symlink():
                source = channel.resolve()
                channel.unlink()
                shutil.copytree(source, channel)


def target_named(name: str) -> Target:
    if name == PROCESS:
        return ProcessTarget()
    built = {
        backend: os.environ[variable]
        for backend, variable in (
            (TORCH, containers.SERVE_IMAGE_ENV),
            (ONNX, containers.SERVE_CPU_IMAGE_ENV),
        )
        if os.environ.get(variable)
    }
    if not built:
        containers.image_from_env(containers.SERVE_IMAGE_ENV)  # raises: says what is missing
    return ContainerTarget(os.environ.get(containers.TRAIN_IMAGE_ENV) or None, built)
