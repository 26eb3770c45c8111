"""serving/stop_signals.py: signal handlers that only set a flag, and a wait they wake."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("artifact", "container_serve", "container_train", "scripts", "bench")

# Run in a child: installing handlers here would take pytest's own SIGINT handling away.
WAKES_AT_ONCE = textwrap.dedent(
    """
    import os, signal, threading, time
    from serving.stop_signals import StopSignals

    stop = StopSignals()
    assert not stop.wait(0.05)
    # From another thread, as a signal may arrive while the main thread waits.
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    assert stop.wait(30)
    waited = time.monotonic() - started
    for _ in range(2000):  # a burst fills the wakeup pipe: nothing blocks, the flag stays
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.wait(0) and stop.received == signal.SIGINT
    print(f"{waited:.3f}")
    """
)


def test_a_signal_wakes_the_wait_at_once_and_a_burst_is_harmless() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WAKES_AT_ONCE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 5  # the wait was 30 s: the signal, not the timeout, ended it


def test_no_other_signal_handler_in_the_project() -> None:
    """One way to stop on a signal: a handler written elsewhere may take a lock again."""
    installs = re.compile(r"signal\.signal\(")
    found = [
        str(path.relative_to(REPO_ROOT))
        for folder in SOURCES
        for path in (REPO_ROOT / folder).rglob("*.py")
        if installs.search(path.read_text(encoding="utf-8"))
    ]
    assert found == ["container_serve/serving/stop_signals.py"]
