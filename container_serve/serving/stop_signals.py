"""SIGTERM and SIGINT as a flag the main loop reads: the signal handler does nothing else.

A Python signal handler runs in the main thread between two bytecodes, wherever that
thread is: inside a critical section, or inside the handler of the signal before. A handler
that takes a lock can wait for ever on a lock its own thread holds; `threading.Event.set()`
takes one, and two signals back to back (a process group's SIGTERM, then the one a parent
passes on) left `serve` blocked in a futex for good. So the handler only sets a flag, and
the main loop waits on a pipe that the interpreter's C-level handler writes to
(`signal.set_wakeup_fd`): the loop wakes at once, takes no lock a handler could want, and
does the stopping itself.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Iterable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Installed in the main thread; `is_set()` and `wait()` read like a threading.Event's."""

    def __init__(self, signals: Iterable[signal.Signals] = STOP_SIGNALS) -> None:
        self.received: int | None = None  # the number of the last stop signal
        self._wakeup_read, wakeup_write = os.pipe()
        for descriptor in (self._wakeup_read, wakeup_write):
            os.set_blocking(descriptor, False)  # set_wakeup_fd's rule: a full pipe never blocks
        # A burst of signals may fill the pipe: the flag is already set, nothing is lost.
        signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
        for signum in signals:
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        """The handler: one assignment, no lock, no call."""
        self.received = signum

    def is_set(self) -> bool:
        return self.received is not None

    def wait(self, timeout: float) -> bool:
        """Whether a stop signal has arrived, waiting up to `timeout` seconds for one."""
        if self.received is None:
            # A signal interrupts select, its handler runs, and select returns at once: the
            # wakeup byte is there. A signal caught by another thread wakes select the same way.
            select.select([self._wakeup_read], [], [], timeout)
            self._drain()
        return self.received is not None

    def _drain(self) -> None:
        try:
            while os.read(self._wakeup_read, 512):
                pass
        except BlockingIOError:
            pass
