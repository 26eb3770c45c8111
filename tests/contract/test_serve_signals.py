"""Contract tests: `serve` stops on two signals back to back, every time, as processes.

Two signals close together are the normal case, not a corner: a process group's SIGTERM
reaches `scripts/local.py serve` and its `serve` at once, and local.py passes its own on; a
terminal's Ctrl-C does the same with SIGINT. A signal handler that takes a lock can then
deadlock the main thread (serving/stop_signals.py says how), so each round here sends a
pair, in start-up or while serving, and `serve` must exit 0 within SageMaker's window,
leaving no process behind.

A multi-model endpoint starts with no model, so a round costs a JVM start at most.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from launch.local import client
from launch.local.processes import free_port, wait_for_ping
from support import servers
from support.servers import SHUTDOWN_LIMIT_S, Server, stop_and_clean
from support.tiny_models import write_model_dir

pytestmark = pytest.mark.contract

ROUNDS = 20
PAIRS = ((signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGTERM))
LOCAL = Path(__file__).resolve().parents[2] / "scripts" / "local.py"


def wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def starting(server: Server) -> bool:
    """`serve` has made its runtime folder: its signal handling is in place, the JVM coming."""
    return any(server.tmp_dir.glob("serve-*")) or server.process.poll() is not None


def stop_with_a_pair(server: Server, pair: tuple[signal.Signals, signal.Signals]) -> int | None:
    """Both signals back to back; `serve`'s exit code, None if it is still running after
    SageMaker's SIGTERM-to-SIGKILL window."""
    for signum in pair:
        os.kill(server.process.pid, signum)
    try:
        return server.process.wait(timeout=SHUTDOWN_LIMIT_S)
    except subprocess.TimeoutExpired:
        return None


def test_two_signals_back_to_back_stop_serve_every_time(tmp_path: Path) -> None:
    outcomes = []
    for index in range(ROUNDS):
        server = servers.start_multi_model(tmp_path / f"round-{index}")
        try:
            if index % 2:  # while serving: the supervision loop
                wait_for_ping(server.port, server.process)
            else:  # in start-up: waiting for the frontend
                wait_for(lambda server=server: starting(server))
            outcomes.append(stop_with_a_pair(server, PAIRS[index // 2 % len(PAIRS)]))
        finally:
            leftovers = stop_and_clean(server)
        assert leftovers == [], f"round {index}"
    assert outcomes == [0] * ROUNDS


@pytest.mark.parametrize("pair", PAIRS, ids=["term-term", "int-term"])
def test_local_serve_stops_when_its_process_group_is_signalled(
    pair: tuple[signal.Signals, signal.Signals], tmp_path: Path
) -> None:
    """local.py serve and its `serve` share a process group: both get each signal, and
    local.py passes its own on."""
    model_dir = write_model_dir(tmp_path / "model")
    port = free_port()
    tmp_dir = tmp_path / "tmp"  # everything the run starts is found by its TMPDIR
    tmp_dir.mkdir()
    log = tmp_path / "local.log"
    with log.open("wb") as log_file:
        command = ["serve", "--model-dir", str(model_dir), "--port", str(port)]
        local = subprocess.Popen(
            [sys.executable, str(LOCAL), *command],
            env={**os.environ, "TMPDIR": str(tmp_dir), "TEMP": str(tmp_dir)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Server(port, local, log, tmp_dir)
    try:
        wait_for(lambda: client.ping(port) or local.poll() is not None)
        for signum in pair:
            os.killpg(local.pid, signum)
        exit_code = local.wait(timeout=SHUTDOWN_LIMIT_S)
    finally:
        leftovers = stop_and_clean(running)
    assert exit_code == 0, log.read_text()[-2000:]
    assert leftovers == []
