"""The one reduced-precision rule (model_artifact.precision), as training and serving use it.

The hardware is stubbed: which GPU generation or CPU instructions a machine has decides
the answer, and the tests run on a CPU-only machine.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from model_artifact import precision
from trainer.runtime import select_runtime

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)


@pytest.fixture
def cpu_with_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_bf16_instructions", lambda: True)


@pytest.fixture
def cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_bf16_instructions", lambda: False)


def stub_gpu(monkeypatch: pytest.MonkeyPatch, compute_capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: compute_capability)


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")],
)
def test_auto_on_a_gpu_is_bf16_from_ampere_and_fp16_before(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: str
) -> None:
    stub_gpu(monkeypatch, capability)
    assert precision.resolve("auto", GPU) == expected
    assert precision.is_native(expected, GPU)
    assert precision.is_native("fp16", GPU)  # every GPU computes fp16


@pytest.mark.usefixtures("cpu_with_bf16")
def test_auto_on_a_cpu_with_bf16_instructions_is_bf16() -> None:
    assert precision.resolve("auto", CPU) == "bf16"
    assert precision.is_native("bf16", CPU)
    assert not precision.is_native("fp16", CPU)


@pytest.mark.usefixtures("cpu_without_bf16")
def test_auto_on_a_cpu_without_bf16_instructions_is_fp32_and_bf16_is_emulated() -> None:
    assert precision.resolve("auto", CPU) == "fp32"
    assert precision.resolve("bf16", CPU) == "bf16"  # forced: runs, emulated
    assert not precision.is_native("bf16", CPU)


def test_named_precisions_map_to_torch_dtypes_and_others_are_refused() -> None:
    assert [precision.dtype(name) for name in ("fp32", "bf16", "fp16")] == [
        None,
        torch.bfloat16,
        torch.float16,
    ]
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        precision.resolve("int8", CPU)


def test_the_choices_are_known_without_importing_torch() -> None:
    """`serve` validates SERVING_PRECISION before it starts anything: torch costs seconds."""
    script = (
        "import sys\n"
        "from model_artifact import precision\n"
        "assert precision.CHOICES == ('auto', 'fp32', 'bf16', 'fp16')\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("capability", "amp", "expected"),
    [
        ((8, 0), "auto", torch.bfloat16),
        ((7, 0), "auto", torch.float16),
        ((8, 0), "fp16", torch.float16),
        ((7, 0), "bf16", torch.bfloat16),
        ((8, 0), "off", None),
    ],
)
def test_the_training_job_on_a_gpu_follows_the_same_rule(
    monkeypatch: pytest.MonkeyPatch,
    capability: tuple[int, int],
    amp: str,
    expected: torch.dtype | None,
) -> None:
    stub_gpu(monkeypatch, capability)
    runtime = select_runtime(amp)
    assert (runtime.device.type, runtime.amp_dtype) == ("cuda", expected)


@pytest.mark.parametrize(
    ("has_bf16", "amp", "expected"),
    [
        (True, "auto", torch.bfloat16),
        (False, "auto", None),
        (False, "bf16", torch.bfloat16),
        (True, "fp16", None),  # a CPU never runs the training job's fp16
        (True, "off", None),
    ],
)
def test_the_training_job_on_a_cpu_follows_the_same_rule(
    monkeypatch: pytest.MonkeyPatch, has_bf16: bool, amp: str, expected: torch.dtype | None
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_bf16_instructions", lambda: has_bf16)
    assert select_runtime(amp).amp_dtype == expected
