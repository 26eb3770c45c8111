"""The real `serve` as a process for the tests: started with a private TMPDIR, stopped and
checked gone, whatever it started included."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from launch.local import client, processes

SHUTDOWN_LIMIT_S = 30  # SageMaker's SIGTERM-to-SIGKILL window


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    tmp_dir: Path  # the server's TMPDIR and TEMP: every process it starts refers to it

    def post(
        self, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, str]:
        return client.post_invocation(self.port, body, content_type, headers)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self, timeout: float = 300) -> None:
        processes.wait_until_ready(self.port, self.process, self.log_path, timeout)

    def wait_for_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def close(self) -> list[str]:
        """Stop it; whatever it left behind (should be nothing), killed and described."""
        return stop_and_clean(self)


def start(model_dir: Path, work_dir: Path, env: dict[str, str] | None = None) -> Server:
    """`serve` for model_dir on a free port; its log goes to work_dir/serve.log."""
    return _start(
        work_dir,
        env,
        lambda port, env, log: processes.start_server(
            model_dir, work_dir / "base", port, env=env, log_file=log
        ),
    )


def start_multi_model(work_dir: Path, env: dict[str, str] | None = None) -> Server:
    """`serve` as a multi-model endpoint (no model loaded yet) on a free port."""
    return _start(
        work_dir,
        env,
        lambda port, env, log: processes.start_multi_model_server(
            work_dir / "base", port, env=env, log_file=log
        ),
    )


def _start(
    work_dir: Path,
    env: dict[str, str] | None,
    launch: Callable[[int, dict[str, str], IO[bytes]], subprocess.Popen[bytes]],
) -> Server:
    # A short private TMPDIR: worker sockets live under it, and unix socket paths are limited
    # to 107 bytes (pytest's tmp_path is too deep).
    tmp_dir = Path(tempfile.mkdtemp(prefix="serve-test-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "serve.log"
    port = processes.free_port()
    with log_path.open("wb") as log_file:
        process = launch(
            port, {"TMPDIR": str(tmp_dir), "TEMP": str(tmp_dir), **(env or {})}, log_file
        )
    return Server(port, process, log_path, tmp_dir)


def processes_of(server: Server) -> list[psutil.Process]:
    """Every live process started for this server, orphans included (found by its temp dir)."""
    marker = str(server.tmp_dir)
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            in_command = marker in " ".join(process.cmdline())
            in_env = process.environ().get("TMPDIR", "").startswith(marker)
            if process.pid == server.process.pid or in_command or in_env:
                found.append(process)
    return found


def workers_of(server: Server) -> list[psutil.Process]:
    """The live worker processes, found by the ready reports they write under their pid
    (forked from the preloaded process, their command line is that process's)."""
    reported = {int(path.suffix[1:]) for path in server.tmp_dir.glob("serve-*/worker_ready.*")}
    return [process for process in processes_of(server) if process.pid in reported]


def stop_and_clean(server: Server) -> list[str]:
    """Stop `serve`; SIGKILL and return whatever it left behind (should be nothing)."""
    processes.stop_server(server.process, timeout=SHUTDOWN_LIMIT_S)
    leftovers = processes_of(server)
    described = []
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            described.append(" ".join(process.cmdline()[:3]))
            process.kill()
    psutil.wait_procs(leftovers, timeout=10)
    shutil.rmtree(server.tmp_dir, ignore_errors=True)
    return described
