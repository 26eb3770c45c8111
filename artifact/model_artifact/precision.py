"""Reduced precision where the hardware computes it natively: the one rule behind the
training job's `amp=auto` and serving's `SERVING_PRECISION=auto`.

bf16 and fp16 are faster than fp32 only on hardware with instructions for them: GPUs
(bf16 from compute capability 8.0, Ampere; fp16 on older ones) and CPUs with AVX512-BF16
or AMX (ml.m7i, ml.c7i: Sapphire Rapids). Elsewhere the arithmetic is emulated and slower
than fp32, so `auto` keeps fp32 there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The precisions a user can name, and the torch dtype each computes in (None: fp32, no
# cast). Names only, so that a launcher can validate a choice without importing torch.
TORCH_DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
AUTO = "auto"
CHOICES = (AUTO, *TORCH_DTYPES)
# Compute capability from which a GPU has bf16 tensor cores (Ampere, A10G/A100 and later).
BF16_GPU_MAJOR = 8


def dtype(precision: str) -> torch.dtype | None:
    """`fp32`, `bf16` or `fp16` -> the torch dtype (None for fp32)."""
    import torch  # noqa: PLC0415 - see TORCH_DTYPES

    if precision not in TORCH_DTYPES:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(CHOICES)}")
    attribute = TORCH_DTYPES[precision]
    return None if attribute is None else getattr(torch, attribute)


def gpu_native(compute_major: int) -> str:
    """Every CUDA GPU torch supports computes fp16; bf16 needs Ampere or later."""
    return "bf16" if compute_major >= BF16_GPU_MAJOR else "fp16"


def cpu_native(has_bf16_instructions: bool) -> str:
    return "bf16" if has_bf16_instructions else "fp32"


def cpu_has_bf16_instructions() -> bool:
    """AVX512-BF16 or AMX. (oneDNN's own `bf16 supported` also says yes on plain AVX-512,
    where it emulates bf16 more slowly than fp32.)"""
    import torch  # noqa: PLC0415 - see TORCH_DTYPES

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def native(device: torch.device) -> str:
    """The precision `device` computes fastest: a reduced one where it is native, else fp32."""
    import torch  # noqa: PLC0415 - see TORCH_DTYPES

    if device.type == "cuda":
        return gpu_native(torch.cuda.get_device_capability(device)[0])
    if device.type == "cpu":
        return cpu_native(cpu_has_bf16_instructions())
    return "fp32"


def is_native(precision: str, device: torch.device) -> bool:
    """Whether `device` computes `precision` in hardware (fp32 always counts as native)."""
    if precision in ("fp32", native(device)):
        return True
    return device.type == "cuda" and precision == "fp16"  # a bf16 GPU computes fp16 too


def resolve(choice: str, device: torch.device) -> str:
    """`auto`, `fp32`, `bf16` or `fp16` -> the precision to compute in on `device`."""
    if choice == AUTO:
        return native(device)
    if choice not in TORCH_DTYPES:
        raise ValueError(f"precision {choice!r} is not one of {', '.join(CHOICES)}")
    return choice
