"""Progress: a bar on a terminal, plain periodic lines in CloudWatch logs."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")

LOG_EVERY_S = 30.0


def progress(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    if sys.stderr.isatty():
        yield from tqdm(items, total=total, desc=description, leave=False)
        return
    started = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            last = now
            log.info("%s: %d/%d batches, %.0f s", description, done, total, now - started)
