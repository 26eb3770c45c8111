"""`serve`: run multi-model-server with this project's handler, and supervise it.

Why not the toolkit's `sagemaker_inference.model_server.start_model_server`:
- it writes its config to the fixed path /etc/sagemaker-mms.properties and finds the
  server by scanning every process of the machine ("multiple mms model servers are not
  supported"), so two servers on one machine (tests, benchmarks) break each other;
- it never checks that the model loaded: multi-model-server answers /ping with 200 even
  when no worker is alive, so a broken artifact would look healthy;
- on SIGTERM it signals the Java frontend only, and the Python workers can be orphaned.

So `serve` checks the artifact, writes the config into a private runtime directory
(also the server's TMPDIR for its pid file and TEMP for its worker sockets), starts the
`multi-model-server` command in its own process group, waits until every worker has
loaded and warmed up the model, and exits non-zero with the reason when one can't.
On SIGTERM or SIGINT it stops the whole process group within SageMaker's 30 seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

from model_artifact.config import ArtifactError, read_config
from serving import contract, frontend, state
from serving.backends import onnx_files
from serving.errors import ServeConfigError
from serving.stop_signals import StopSignals

logger = logging.getLogger("serve")

MODEL_NAME = "model"
PRELOAD_LAUNCHER = "serve-backend"  # console script of this package: serving.preload.launch
POLL_INTERVAL_S = 0.2
# SageMaker sends SIGKILL 30 s after SIGTERM; leave time for the escalation below.
SHUTDOWN_GRACE_S = 20.0


class ServeFailedError(Exception):
    """`serve` must stop; the message is the one-line reason for the log."""


def main() -> int:
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s [serve] %(message)s"
    )
    stop_requested = StopSignals()  # first: a signal from here on stops what has started
    try:
        return serve(contract.read_settings(), stop_requested)
    except (ServeConfigError, ArtifactError, ServeFailedError, frontend.FrontendError) as error:
        logger.error("serve failed: %s", error)
        return 1


def serve(settings: contract.ServeSettings, stop_requested: StopSignals) -> int:
    started = time.perf_counter()
    if settings.multi_model:
        logger.info("multi-model endpoint: models are loaded with POST /models")
    else:
        with timed("check the model artifact"):
            config = read_config(settings.model_dir)
        logger.info("model %s, classes %s", settings.model_dir, ", ".join(config.classes))
        if settings.backend == contract.ONNX:  # a missing graph stops `serve` here, with why
            chosen = onnx_files.choose(
                config, settings.model_dir, settings.precision, settings.int8_min_agreement
            )
            logger.info(
                "onnx backend: %s in %s (%s)", chosen.path.name, chosen.precision, chosen.reason
            )
    with runtime_dir() as runtime:
        server = start_model_server(settings, runtime)
        try:
            wait_for_startup(settings, runtime, server, stop_requested)
            if stop_requested.is_set():
                return 0
            logger.info(
                "ready on port %d in %.1f s (%s backend, %d worker(s) x %d thread(s), "
                "batches of up to %d, %s)",
                settings.port,
                time.perf_counter() - started,
                settings.backend,
                settings.workers,
                settings.torch_threads,
                settings.batch_size,
                f"{settings.gpus} GPU(s)" if settings.gpus else "CPU",
            )
            supervise(settings, runtime, server, stop_requested)
            return 0
        finally:
            stop_process_group(server)


def wait_for_startup(
    settings: contract.ServeSettings,
    runtime: Path,
    server: subprocess.Popen[bytes],
    stop_requested: StopSignals,
) -> None:
    """Wait for the frontend, then for every worker to load and warm up the model."""
    phases = [
        (
            "start the model server (JVM frontend answers /ping)",
            lambda: ping_status(settings.port) is not None,
        ),
    ]
    if not settings.multi_model:  # a multi-model endpoint starts empty
        phases.append(
            (
                f"load and warm up the model in {settings.workers} worker(s)",
                lambda: state.ready_workers(runtime) >= settings.workers,
            )
        )
    for phase, condition in phases:
        with timed(phase):
            wait_until(condition, settings, runtime, server, stop_requested)
    log_worker_steps(runtime, contract.BACKEND_RUNTIMES[settings.backend])


def log_worker_steps(runtime: Path, backend_runtime: str = "torch") -> None:
    """The steps inside the last phase, as the preload process and the workers reported them."""
    steps = [
        (
            f"preload: import {backend_runtime} and the handler while the JVM starts",
            state.preloaded_seconds(runtime),
        )
    ]
    for pid, timings in state.worker_timings(runtime).items():
        steps += [(f"worker {pid}: {step}", seconds) for step, seconds in timings.items()]
    for step, seconds in steps:
        if seconds is not None:
            logger.info("%s: %.2f s", step, seconds, extra={"phase": step, "seconds": seconds})


@contextmanager
def timed(phase: str) -> Iterator[None]:
    """Log how long each startup phase took (a slow start must be easy to place)."""
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    logger.info("%s: %.2f s", phase, seconds, extra={"phase": phase, "seconds": seconds})


@contextmanager
def runtime_dir() -> Iterator[Path]:
    """A private directory under TMPDIR for the config, sockets, pid file and worker state."""
    path = Path(tempfile.mkdtemp(prefix="serve-"))
    longest_socket = path / ".mms.sock.90000"
    if len(str(longest_socket)) > contract.MAX_UNIX_SOCKET_PATH:
        path.rmdir()
        raise ServeFailedError(
            f"TMPDIR {tempfile.gettempdir()} is too long for the server's unix sockets "
            f"({len(str(longest_socket))} > {contract.MAX_UNIX_SOCKET_PATH} bytes): "
            "set TMPDIR to a shorter directory"
        )
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_model_server(settings: contract.ServeSettings, runtime: Path) -> subprocess.Popen[bytes]:
    """The JVM frontend (serving.frontend), which starts the Python workers itself."""
    java = frontend.java_executable()
    jar = frontend.installed_jar()
    config_file = runtime / "mms.properties"
    config_file.write_text(frontend.mms_properties(settings, runtime), encoding="utf-8")
    launch = frontend.Launch(
        java=java,
        jar=jar,
        runtime=runtime,
        config_file=config_file,
        model_store=contract.MULTI_MODEL_STORE if settings.multi_model else settings.base_dir,
        models=None if settings.multi_model else f"{MODEL_NAME}={contract.MODEL_SUBDIR}",
    )
    # Decided once for both: a launcher without the preloaded process waits for its socket
    # before it runs python itself, a preloaded process without launchers holds torch for
    # nothing.
    launcher = preload_launcher(settings)
    command = frontend.jvm_command(settings, launch, python=str(launcher or sys.executable))
    logger.info(
        "starting: %s", " ".join(word for word in command if not word.startswith("-Dserving."))
    )
    env = frontend.model_server_env(settings, runtime)
    # A process group of their own makes the JVM, the preload process and every worker one
    # group to stop (and keeps a terminal's Ctrl-C, which `serve` handles, away from them).
    jvm = subprocess.Popen(command, env=env, cwd=runtime, stdin=subprocess.DEVNULL, process_group=0)
    if launcher is not None:
        # Started right after the JVM, in its group: torch loads while the JVM boots.
        subprocess.Popen(
            [sys.executable, "-m", "serving.preload", str(runtime / frontend.PRELOAD_SOCKET)],
            env=env,
            cwd=runtime,
            stdin=subprocess.DEVNULL,
            process_group=jvm.pid,
        )
    return jvm


def preload_launcher(settings: contract.ServeSettings) -> Path | None:
    """The launcher multi-model-server runs as `python` to reach the preloaded process
    (serving.preload), or None to run plain python: preloading is off, or the console
    script is not installed next to this interpreter."""
    launcher = Path(sys.executable).with_name(PRELOAD_LAUNCHER)
    return launcher if settings.preload and launcher.is_file() else None


def ping_status(port: int) -> str | None:
    """The status /ping reports, None while the frontend doesn't answer.

    Not a readiness signal: it says "Healthy" once workers have started, before they load.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return str(json.loads(response.read()).get("status"))
    except (OSError, ValueError, AttributeError):
        return None


def wait_until(
    condition: Callable[[], bool],
    settings: contract.ServeSettings,
    runtime: Path,
    server: subprocess.Popen[bytes],
    stop_requested: StopSignals,
) -> None:
    """Poll `condition` until it holds, failing fast when the server or the model fails."""
    deadline = time.monotonic() + settings.startup_timeout_s
    while not stop_requested.is_set():
        check_alive(settings, runtime, server)
        if condition():
            return
        if time.monotonic() > deadline:
            raise ServeFailedError(
                f"the model was not ready within {settings.startup_timeout_s} s "
                f"({contract.STARTUP_TIMEOUT_ENV})"
            )
        stop_requested.wait(POLL_INTERVAL_S)


def supervise(
    settings: contract.ServeSettings,
    runtime: Path,
    server: subprocess.Popen[bytes],
    stop_requested: StopSignals,
) -> None:
    """Serve until SIGTERM; a dead server, or a worker that can't reload the single model,
    is fatal. (On a multi-model endpoint a model that fails to load only fails its POST.)"""
    while not stop_requested.wait(1.0):
        check_alive(settings, runtime, server)
        reap_orphans(server.pid)
    logger.info("stop requested: stopping the model server")


def check_alive(
    settings: contract.ServeSettings, runtime: Path, server: subprocess.Popen[bytes]
) -> None:
    reason = None if settings.multi_model else state.load_failure(runtime)
    if reason is not None:
        raise ServeFailedError(f"the model failed to load: {reason}")
    if server.poll() is not None:
        raise ServeFailedError(
            f"the model server exited with code {server.returncode}; its log is above"
        )


def reap_orphans(server_pid: int) -> None:
    """As PID 1 of a container, `serve` inherits orphaned workers: collect their exit status.

    Only exited children other than the server: waiting on any pid (-1) could take the
    server's own exit status away from Popen.
    """
    for child in psutil.Process().children():
        if child.pid == server_pid:
            continue
        with suppress(psutil.Error, ChildProcessError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


def stop_process_group(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole process group, SIGKILL what is left after the grace time."""
    group = server.pid
    started = time.monotonic()
    for signum, grace in ((signal.SIGTERM, SHUTDOWN_GRACE_S), (signal.SIGKILL, 5.0)):
        if not group_alive(group, server):
            break
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while group_alive(group, server) and time.monotonic() < deadline:
            time.sleep(0.05)
    server.poll()
    logger.info("model server stopped in %.2f s", time.monotonic() - started)


def group_alive(group: int, server: subprocess.Popen[bytes]) -> bool:
    server.poll()  # reap our direct child so that it doesn't linger as a zombie
    reap_orphans(server.pid)
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
