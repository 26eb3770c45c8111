"""Op-level profiling of the first training steps with torch.profiler.

SageMaker Debugger's framework profiling is deprecated for PyTorch 2.x, so a
`profile_steps=N` job records its own trace: Chrome (chrome://tracing, Perfetto)
and the TensorBoard profiler plugin both read the *.pt.trace.json it writes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import torch
from torch.profiler import ProfilerActivity, profile

log = logging.getLogger(__name__)
T = TypeVar("T")

TRACE_FILE = "trainer.pt.trace.json"


def profiled(items: Iterator[T], steps: int, output_dir: Path) -> Iterator[T]:
    """Yield `items`, recording the work done on the first `steps` of them."""
    if steps <= 0:
        yield from items
        return
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as profiler:
        for _, item in zip(range(steps), items, strict=False):
            yield item
            profiler.step()
    output_dir.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(output_dir / TRACE_FILE))
    sort_by = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    log.info(
        "profile of %d training steps in %s; top ops:\n%s",
        steps,
        output_dir / TRACE_FILE,
        profiler.key_averages().table(sort_by=sort_by, row_limit=10),
    )
    yield from items
