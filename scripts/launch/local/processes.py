"""`train` and `serve` as processes, started the way SageMaker starts the containers.

The commands are the console scripts installed next to this Python (the images install
the same packages); SAGEMAKER_BASE_DIR points them at a folder laid out like /opt/ml.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from launch.local import client
from launch.local.jobdir import host_dirs, host_names, layout_job_dir, layout_serving_dir
from model_artifact.config import CONFIG_FILE
from serving.contract import BASE_DIR_ENV, BIND_TO_PORT_ENV, MULTI_MODEL_ENV
from serving.frontend import free_port  # one rule for ports; tests import it from here
from serving.stop_signals import StopSignals
from trainer.contract import MASTER_ADDR_ENV, MASTER_PORT_ENV

DEFAULT_SERVE_PORT = 8080
FOREGROUND_POLL_S = 0.5  # how often a foreground `serve` is checked for an exit of its own


def installed_command(name: str) -> str:
    """A console script of this environment (`train`, `serve`)."""
    return str(Path(sys.executable).with_name(name))


def training_environment(job_dir: Path, rendezvous_port: int | None = None) -> dict[str, str]:
    """`train`'s environment; a job of several workers meets on loopback at a free port."""
    return {
        **os.environ,
        BASE_DIR_ENV: str(job_dir.resolve()),
        "PYTHONUNBUFFERED": "1",
        MASTER_ADDR_ENV: "127.0.0.1",
        MASTER_PORT_ENV: str(rendezvous_port or free_port()),
    }


def run_training(
    data: Path,
    job_dir: Path,
    hyperparameters: dict[str, str],
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.CompletedProcess[Any]:
    """One training job in JOB_DIR on DATA's channels, `env` added to its environment;
    `popen` goes to subprocess.run."""
    layout_job_dir(job_dir, data, hyperparameters)
    return subprocess.run(
        [installed_command("train")],
        env={**training_environment(job_dir), **(env or {})},
        check=False,
        **popen,
    )


def start_hosts(
    data: Path, job_dir: Path, hyperparameters: dict[str, str], hosts: int, **popen: Any
) -> list[subprocess.Popen[Any]]:
    """A job of `hosts` hosts as SageMaker runs it: one `train` per host, each in its own
    JOB/algo-N laid out like /opt/ml, all meeting at the first host on loopback."""
    names, port = host_names(hosts), free_port()
    processes = []
    for name, host_dir in zip(names, host_dirs(job_dir, hosts), strict=True):
        layout_job_dir(host_dir, data, hyperparameters, names, name)
        processes.append(
            subprocess.Popen(
                [installed_command("train")], env=training_environment(host_dir, port), **popen
            )
        )
    return processes


def wait_for_hosts(processes: list[subprocess.Popen[Any]]) -> int:
    """Wait for every host; the job's exit code is the first non-zero one, else 0."""
    codes = [process.wait() for process in processes]
    return next((code for code in codes if code), 0)


def train(data: Path, job_dir: Path, hyperparameters: dict[str, str], hosts: int = 1) -> int:
    """Run one training job, its log streaming to this terminal; returns its exit code."""
    for required in ("train", "valid"):
        if not (data / required).is_dir():
            print(f"note: {data / required} is missing; the job will report it", file=sys.stderr)
    if hosts == 1:
        return run_training(data, job_dir, hyperparameters).returncode
    processes = start_hosts(data, job_dir, hyperparameters, hosts)
    try:
        return wait_for_hosts(processes)
    except KeyboardInterrupt:  # the terminal sent SIGINT to every host as well
        return wait_for_hosts(processes)


def serving_environment(base_dir: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        BASE_DIR_ENV: str(base_dir.resolve()),
        BIND_TO_PORT_ENV: str(port),
        "PYTHONUNBUFFERED": "1",
    }


def start_server(
    model_dir: Path,
    base_dir: Path,
    port: int,
    env: dict[str, str] | None = None,
    log_file: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `serve` for model_dir in the background; its log goes to log_file or here."""
    layout_serving_dir(model_dir, base_dir)
    return subprocess.Popen(
        [installed_command("serve")],
        env={**serving_environment(base_dir, port), **(env or {})},
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
    )


def wait_until_ready(
    port: int, process: subprocess.Popen[bytes], log_path: Path | None = None, timeout: float = 300
) -> None:
    """Wait until the server classifies an image; raise if `serve` exits or times out.

    A classification, not /ping alone: multi-model-server answers /ping before its
    workers have loaded the model.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with code {process.returncode}{tail(log_path)}")
        if client.ping(port) and client.probe(port, timeout=max(1.0, deadline - time.monotonic())):
            return
        time.sleep(0.2)
    raise TimeoutError(f"serve was not ready within {timeout:.0f} s{tail(log_path)}")


def tail(log_path: Path | None, lines: int = 30) -> str:
    if log_path is None:
        return ""
    return ":\n" + "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def stop_server(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, as SageMaker stops a container; SIGKILL only if `serve` overruns."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def serve(model_dir: Path, port: int, base_dir: Path, env: dict[str, str] | None = None) -> int:
    """Run `serve` in the foreground until Ctrl-C or SIGTERM; returns its exit code."""
    stop = StopSignals()  # before `serve` starts: no signal may leave it running alone
    return in_foreground(start_server(model_dir, base_dir, port, env), stop)


def in_foreground(process: subprocess.Popen[bytes], stop: StopSignals) -> int:
    """Wait for `serve`; on SIGTERM or SIGINT, stop it (SIGTERM, SIGKILL if it overruns) and
    return its exit code. `serve` often has the signal already (a terminal's Ctrl-C, a
    process group's SIGTERM): the one passed on is a second, which it takes as the first."""
    while process.poll() is None:
        if stop.wait(FOREGROUND_POLL_S):
            return stop_server(process)
    return process.returncode


# ----------------------------------------------------------------- multi-model endpoints


def start_multi_model_server(
    base_dir: Path,
    port: int,
    env: dict[str, str] | None = None,
    log_file: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """`serve` as a SageMaker multi-model endpoint: it starts empty; POST /models loads."""
    base_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [installed_command("serve")],
        env={**serving_environment(base_dir, port), MULTI_MODEL_ENV: "true", **(env or {})},
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
    )


def model_folders(models_dir: Path) -> dict[str, Path]:
    """The trained models in models_dir (each a training job's model/ folder), by name."""
    return {
        folder.name: folder
        for folder in sorted(models_dir.iterdir())
        if (folder / CONFIG_FILE).is_file()
    }


def wait_for_ping(port: int, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not client.ping(port):
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"serve did not answer /ping within {timeout:.0f} s")
        time.sleep(0.2)


def serve_multi_model(
    models_dir: Path, port: int, base_dir: Path, env: dict[str, str] | None = None
) -> int:
    """A multi-model endpoint in the foreground, loading every model of models_dir as
    SageMaker would load it (POST /models with its folder); 507 once it holds its most."""
    folders = model_folders(models_dir)
    if not folders:
        print(f"error: no model folders (with {CONFIG_FILE}) in {models_dir}", file=sys.stderr)
        return 2
    stop = StopSignals()
    process = start_multi_model_server(base_dir, port, env)
    try:
        wait_for_ping(port, process)
    except (RuntimeError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        stop_server(process)
        return 1
    for name, folder in folders.items():
        if stop.is_set():
            break
        status, message = client.load_model(port, name, folder)
        print(f"model {name}: {status} {message}", flush=True)
    return in_foreground(process, stop)
