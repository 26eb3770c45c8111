"""Where the job computes: device, mixed precision and memory format."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from model_artifact import precision


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

    def training_autocast(self) -> contextlib.AbstractContextManager[object]:
        """Autocast for layers that train: bf16 only (fp16 would need loss scaling)."""
        if self.amp_dtype != torch.bfloat16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        precision = "fp32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")
        return f"device={self.device} backbone_precision={precision}"


def select_runtime(amp: str, device: torch.device | None = None) -> Runtime:
    """GPU when there is one. `amp=auto` runs the frozen backbone under autocast in the
    reduced precision the device computes natively (model_artifact.precision: bf16 on recent
    GPUs and on CPUs with AVX512-BF16 or AMX, fp16 on older GPUs) and in fp32 elsewhere: on
    a CPU without bf16 instructions autocast is slower. `bf16` and `fp16` force a precision,
    except that a CPU never runs fp16 (it has no fast fp16 kernels); `off` is fp32.
    `device`: a worker's own GPU, when the job runs one worker per GPU."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if amp == "off" or (amp == "fp16" and device.type == "cpu"):
        return Runtime(device, None)
    return Runtime(device, precision.dtype(precision.resolve(amp, device)))
