"""Where the job computes: device, mixed precision and memory format."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


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
    """GPU when there is one. `amp=auto` runs the frozen backbone under bf16 autocast where
    the hardware computes bf16 natively (recent GPUs; CPUs with AVX512-BF16 or AMX), fp16 on
    older GPUs, and fp32 elsewhere: on a CPU without bf16 instructions autocast is slower.
    `device`: a worker's own GPU, when the job runs one worker per GPU."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if amp == "off":
        return Runtime(device, None)
    if device.type == "cpu":
        native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return Runtime(
            device, torch.bfloat16 if amp == "bf16" or (amp == "auto" and native_bf16) else None
        )
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return Runtime(device, torch.float16)
    return Runtime(device, torch.bfloat16)
