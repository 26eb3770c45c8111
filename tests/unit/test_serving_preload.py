"""The preloaded process and its launcher (serving/preload.py), as processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import contract, preload

# Reports how it was run, then exits with the code given as its first argument.
SCRIPT = """
import json, os, sys, time
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "marker": os.environ.get("MARKER"),
                  "preloaded": "torch" in sys.modules, "pid": os.getpid()}), flush=True)
if sys.argv[1] == "sleep":
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(60)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), 9)
sys.exit(int(sys.argv[1]))
"""
LAUNCHER = str(Path(sys.executable).with_name("serve-backend"))


@pytest.fixture(scope="module")
def preloaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The preloaded process on a socket (it imports torch: a few seconds)."""
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"preload-test-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    socket_path = folder / "preload.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.preload", str(socket_path)],
        env={**os.environ, contract.STATE_DIR_ENV: str(folder)},
    )
    try:
        yield socket_path
    finally:
        process.kill()
        process.wait()
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def run(socket_path: Path | None, args: list[str], cwd: Path) -> tuple[int, dict[str, object]]:
    env = {**os.environ, "MARKER": "from the launcher"}
    env.pop(contract.PRELOAD_SOCKET_ENV, None)
    if socket_path is not None:
        env[contract.PRELOAD_SOCKET_ENV] = str(socket_path)
    result = subprocess.run(
        [LAUNCHER, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, json.loads(lines[-1]) if lines else {}


def test_a_script_runs_in_the_preloaded_process_as_the_launcher_was_run(
    preloaded: Path, tmp_path: Path
) -> None:
    script = tmp_path / "report.py"
    script.write_text(SCRIPT)
    code, report = run(preloaded, [str(script), "3", "--flag"], cwd=tmp_path)
    assert code == 3
    assert report["argv"] == [str(script), "3", "--flag"]
    assert (report["cwd"], report["marker"]) == (str(tmp_path), "from the launcher")
    assert report["preloaded"] is True  # torch was imported before the script ran


def test_a_signal_is_reported_as_a_shell_reports_it(preloaded: Path, tmp_path: Path) -> None:
    """multi-model-server reads 137 (SIGKILL, e.g. by the OOM killer) as out of memory."""
    script = tmp_path / "report.py"
    script.write_text(SCRIPT)
    code, _ = run(preloaded, [str(script), "kill"], cwd=tmp_path)
    assert code == 128 + signal.SIGKILL


def test_the_child_exits_when_its_launcher_is_killed(preloaded: Path, tmp_path: Path) -> None:
    script = tmp_path / "report.py"
    script.write_text(SCRIPT)
    pid_file = tmp_path / "pid"
    launcher = subprocess.Popen(
        [LAUNCHER, str(script), "sleep", str(pid_file)],
        env={**os.environ, contract.PRELOAD_SOCKET_ENV: str(preloaded)},
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pid_file.read_text())
    launcher.kill()  # as multi-model-server stops a backend
    launcher.wait()
    deadline = time.monotonic() + 10
    while (
        Path(f"/proc/{child}").exists()
        and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]
    ):
        assert time.monotonic() < deadline, "the child outlived its launcher"
        time.sleep(0.05)


@pytest.mark.parametrize("socket_state", ["unset", "nothing listening"])
def test_without_a_preloaded_process_the_launcher_runs_python_itself(
    tmp_path: Path, socket_state: str
) -> None:
    script = tmp_path / "report.py"
    script.write_text(SCRIPT)
    socket_path = None
    if socket_state == "nothing listening":
        socket_path = tmp_path / "stale.sock"
        socket_path.write_text("")  # a leftover file: connecting is refused at once
    code, report = run(socket_path, [str(script), "4"], cwd=tmp_path)
    assert (code, report["preloaded"]) == (4, False)


def fake_preloaded(socket_path: Path, answers: bytes, unread: int = 0) -> threading.Thread:
    """A preloaded process that takes one launcher's request but for its last `unread`
    bytes, sends `answers` and goes away (b"": before forking; b"\\x01": after forking,
    without the child's status). Bytes left unread make the launcher's next read fail
    (ECONNRESET) instead of seeing the end of the stream."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(1)

    def serve() -> None:
        with listener, listener.accept()[0] as connection:
            header, streams, _, _ = socket.recv_fds(connection, 4, 3)
            for descriptor in streams:
                os.close(descriptor)
            (length,) = struct.unpack("!I", header)
            received = b""
            while len(received) < length - unread:
                received += connection.recv(length - unread - len(received))
            connection.sendall(answers)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("answers", "unread", "code", "falls_back"),
    [
        (b"", 0, 1, True),  # never forked: python runs here instead
        (b"", 1, 1, True),
        # Forked, then the preloaded process died: the child runs the worker; the launcher
        # only reports the failure.
        (b"\x01", 0, 1, False),
        (b"\x01", 1, 1, False),
        (b"\x01" + struct.pack("!i", 7), 0, 7, False),
    ],
)
def test_the_launcher_falls_back_to_python_only_before_the_child_is_forked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answers: bytes,
    unread: int,
    code: int,
    falls_back: bool,
) -> None:
    """A fallback after the fork would start a second worker with the same arguments."""
    socket_path = tmp_path / "preload.sock"
    server = fake_preloaded(socket_path, answers, unread)
    executed: list[list[str]] = []
    monkeypatch.setattr(preload.os, "execv", lambda path, argv: executed.append(argv))
    monkeypatch.setenv(contract.PRELOAD_SOCKET_ENV, str(socket_path))
    assert preload.launch(["worker.py", "--sock-name", "x"]) == code
    server.join(timeout=10)
    expected = [[sys.executable, "worker.py", "--sock-name", "x"]] if falls_back else []
    assert executed == expected
