"""A Python process that has imported torch and the handler before multi-model-server
asks for one, so that the import overlaps the JVM's start instead of following it.

multi-model-server starts its Python backend only once the JVM has booted, and each worker
then imports the handler: torch alone takes 2-3 s, paid after the JVM's second or so, and
again for every model a multi-model endpoint loads. So `serve` starts this process first:

- `serve_forever(socket_path)` listens on a unix socket, then imports the backend's runtime
  (torch or onnxruntime) and the handler (never running a torch operation: a process forked
  after one hangs in OpenMP; never making an ONNX Runtime session: its threads don't survive
  a fork either), then
  forks one child per connection; the child takes the connection's argv, environment,
  working directory and standard streams and runs multi-model-server's backend script, its
  imports already done.
- `launch()` is what the JVM starts in place of `python` (`--python`): it passes its own
  arguments, environment and streams to that process, then waits for the child and exits
  with its status. If no such process forks a child for it, it runs `python` itself, as
  usual; once one has, it never does (that would be a second worker).

The JVM sees the launcher as the backend process: it reads the child's output through the
streams passed on, and when it stops the launcher, the child notices and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from serving import contract, state

# What a worker imports: its backend's runtime and module (preloaded_modules), the handler
# (numpy, PIL) and multi-model-server's side.
PRELOADED_MODULES = (
    "serving.entry",
    "serving.handler",
    "mms.arg_parser",
    "mms.model_loader",
    "mms.protocol.otf_message_handler",
    "mms.service",
)
ACCEPT_TIMEOUT_S = 120.0  # the launcher falls back to a plain python after this
SOCKET_WAIT_S = 5.0  # how long a launcher waits for the socket to appear
_LENGTH = struct.Struct("!I")
_STATUS = struct.Struct("!i")
_STREAMS = (0, 1, 2)


# ------------------------------------------------------------------ the preloaded process


def serve_forever(socket_path: Path) -> None:
    """Listen first (launchers queue up while the imports run), import, then fork on request."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(64)
    _preload()
    children: dict[int, socket.socket] = {}
    while True:
        readable, _, _ = select.select([listener], [], [], 0.2)
        if readable:
            connection, _ = listener.accept()
            try:
                children[_fork_for(connection, listener, children)] = connection
            except (OSError, ValueError):  # a launcher that went away, or sent nonsense
                connection.close()
        _report_exits(children)


def preloaded_modules(backend: str) -> tuple[str, ...]:
    """torch or onnxruntime (never both: the CPU image has no torch), then the rest."""
    runtime = contract.BACKEND_RUNTIMES[backend]
    return (runtime, f"serving.backends.{backend}_backend", *PRELOADED_MODULES)


def _preload() -> None:
    started = time.perf_counter()
    for module in preloaded_modules(contract.serving_backend()):
        try:
            __import__(module)
        except Exception as error:  # the worker imports it again and reports why
            print(f"preload: cannot import {module}: {error!r}", file=sys.stderr, flush=True)
    state.report_preloaded(time.perf_counter() - started)


def _fork_for(
    connection: socket.socket, listener: socket.socket, children: dict[int, socket.socket]
) -> int:
    request, streams = _receive(connection)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child never returns from here
        listener.close()
        for other in children.values():  # other launchers' connections are not its business
            other.close()
        _become(request, streams, connection)
    for descriptor in streams:
        os.close(descriptor)
    connection.sendall(b"\x01")  # forked: the launcher stops its fallback timer
    return pid


def _receive(connection: socket.socket) -> tuple[dict[str, object], list[int]]:
    """The launcher's standard streams (passed as descriptors) and its request."""
    header, streams, _, _ = socket.recv_fds(connection, _LENGTH.size, len(_STREAMS))
    if len(streams) != len(_STREAMS):
        for descriptor in streams:
            os.close(descriptor)
        raise ValueError("the launcher did not pass its three standard streams")
    header += _read_exactly(connection, _LENGTH.size - len(header))
    (length,) = _LENGTH.unpack(header)
    return json.loads(_read_exactly(connection, length)), streams


def _read_exactly(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the launcher went away")
        data += chunk
    return data


def _become(request: dict[str, object], streams: list[int], connection: socket.socket) -> None:
    """In the child: take the launcher's streams, environment and arguments; run the script."""
    for target, descriptor in zip(_STREAMS, streams, strict=True):
        os.dup2(descriptor, target)
        os.close(descriptor)
    environment = request["env"]
    argv = request["argv"]
    assert isinstance(environment, dict) and isinstance(argv, list)
    os.environ.clear()
    os.environ.update({str(key): str(value) for key, value in environment.items()})
    os.chdir(str(request["cwd"]))
    sys.argv = [str(word) for word in argv]
    threading.Thread(target=_exit_with_launcher, args=(connection,), daemon=True).start()
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # reported as python would report it
        import traceback  # noqa: PLC0415 - only on this rare path

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_with_launcher(connection: socket.socket) -> None:
    """The JVM stops a backend by killing its launcher: the child must go too."""
    with contextlib.suppress(OSError):
        while connection.recv(1):
            pass
    os._exit(1)


def _report_exits(children: dict[int, socket.socket]) -> None:
    """Send each exited child's status to its launcher, which exits with it."""
    for pid, connection in list(children.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            continue
        del children[pid]
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            # A signal as a shell reports it: the JVM reads 137 (SIGKILL) as out of memory.
            connection.sendall(_STATUS.pack(code if code >= 0 else 128 - code))
        connection.close()


# --------------------------------------------------------------------------- the launcher


def launch(argv: Sequence[str] | None = None) -> int:
    """`serve-backend ARGS...`: run `python ARGS...` in the preloaded process, or here when
    there is none; returns (exits with) its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    socket_path = os.environ.get(contract.PRELOAD_SOCKET_ENV)
    connection = _hand_over(Path(socket_path), args) if socket_path else None
    if connection is not None:
        # Never fall back past this point: the child already runs the script, and a
        # second copy would be a second worker on the same arguments and socket.
        return _child_status(connection)
    os.execv(sys.executable, [sys.executable, *args])
    return 1  # not reached


def _hand_over(socket_path: Path, args: list[str]) -> socket.socket | None:
    """The connection to a child of the preloaded process now running `args`, or None
    when no child was forked (no process, it went away, it never answered)."""
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # `serve` starts both processes together: the socket may be coming
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(ACCEPT_TIMEOUT_S)
        connection.connect(str(socket_path))
        payload = json.dumps(
            {"argv": args, "env": dict(os.environ), "cwd": str(Path.cwd())}
        ).encode()
        socket.send_fds(connection, [_LENGTH.pack(len(payload))], list(_STREAMS))
        connection.sendall(payload)
        forked = connection.recv(1) == b"\x01"
    except OSError:  # TimeoutError and ConnectionError included
        forked = False
    if not forked:
        connection.close()
        return None
    connection.settimeout(None)  # from here on the child's status is all that comes
    return connection


def _child_status(connection: socket.socket) -> int:
    """The forked child's exit status, 1 if the preloaded process fails to send it (the
    JVM then starts a new backend, as for any that dies)."""
    with connection:
        try:
            status = connection.recv(_STATUS.size)
        except OSError:
            return 1
    return _STATUS.unpack(status)[0] if len(status) == _STATUS.size else 1


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m serving.preload SOCKET`: the preloaded process (`serve` starts it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    serve_forever(Path(args[0]))
    return 0


def launch_main() -> None:
    """The `serve-backend` command."""
    sys.exit(launch())


if __name__ == "__main__":
    sys.exit(main())
