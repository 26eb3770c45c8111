"""Where the job computes: device, mixed precision and memory format."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype for the frozen backbone; None = fp32

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        precision = "fp32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")
        return f"device={self.device} backbone_precision={precision}"


def select_runtime(amp: str) -> Runtime:
    """GPU when there is one; `amp=auto` uses bf16 (or fp16) autocast on GPUs only.

    On a CPU, autocast is opt-in (`amp=bf16`): it is faster only where the CPU has
    bf16 instructions, and fp32 keeps CPU results exactly reproducible.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if amp == "off" or (amp == "auto" and device.type == "cpu"):
        return Runtime(device, None)
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return Runtime(device, torch.float16)
    return Runtime(device, torch.bfloat16)
