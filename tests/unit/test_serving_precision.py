"""The torch backend's precision, memory layout and device handling
(serving/backends/torch_backend.py), through the handler.

On this CPU-only machine the GPU path runs with a stubbed device: which tensors are pinned
and how they are moved is checked, not a real copy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from model_artifact import precision
from model_artifact.config import ArtifactError, ModelConfig, read_config
from model_artifact.preprocessing import Preprocessing
from model_artifact.torchscript import export_model
from serving import handler
from serving.backends import torch_backend
from support.tiny_models import TinyNet, photo, write_model_dir


class CastsToFloat(TinyNet):
    """A network whose graph casts its input to fp32: it can only run in fp32."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(images.float())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def fp32_only_model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(classes=("cat", "dog"), preprocessing=Preprocessing.for_image_size(32))
    export_model(tmp_path / "model", CastsToFloat(), config)
    return tmp_path / "model"


def cpu() -> torch.device:
    return torch.device("cpu")


def load(model_dir: Path, choice: str, device: torch.device | None = None) -> handler.LoadedModel:
    runner = torch_backend.load(model_dir, read_config(model_dir), device or cpu(), choice)
    return handler.LoadedModel(runner, read_config(model_dir))


@pytest.mark.parametrize("choice", ["bf16", "fp16"])
def test_a_reduced_precision_casts_the_weights_once_and_agrees_with_fp32(
    model_dir: Path, choice: str
) -> None:
    images = [photo((250, 10, 10)), photo((10, 10, 250), (30, 60))]
    reduced = load(model_dir, choice)
    full = load(model_dir, "fp32")
    assert reduced.precision == choice
    assert {p.dtype for p in reduced.runner.network.parameters()} == {precision.dtype(choice)}
    np.testing.assert_allclose(
        handler.predict_fn(images, reduced), handler.predict_fn(images, full), atol=0.02
    )


def test_inputs_reach_the_network_channels_last_in_its_precision(model_dir: Path) -> None:
    model = load(model_dir, "bf16")
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            seen.append((images.dtype, images.is_contiguous(memory_format=torch.channels_last)))
            return model.runner.network(images)

    runner = dataclasses.replace(model.runner, network=Recorder())
    handler.warm_up(dataclasses.replace(model, runner=runner))
    assert seen == [(torch.bfloat16, True)] * handler.WARM_UP_PASSES  # warm-up in bf16 too


def test_auto_uses_what_the_cpu_computes_natively(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVING_PRECISION", "auto")
    monkeypatch.setattr(precision, "cpu_has_bf16_instructions", lambda: False)
    assert handler.model_fn(model_dir).precision == "fp32"
    monkeypatch.setattr(precision, "cpu_has_bf16_instructions", lambda: True)
    assert handler.model_fn(model_dir).precision == "bf16"


def test_auto_serves_a_model_that_fails_in_reduced_precision_in_fp32(
    fp32_only_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision, "cpu_has_bf16_instructions", lambda: True)
    monkeypatch.setenv("SERVING_PRECISION", "auto")
    assert handler.model_fn(fp32_only_model_dir).precision == "fp32"
    monkeypatch.setenv("SERVING_PRECISION", "bf16")  # asked for explicitly: a load error
    with pytest.raises(ArtifactError, match="in bf16"):
        handler.model_fn(fp32_only_model_dir)


class Context:
    def __init__(self, gpu_id: str | None) -> None:
        self.system_properties = {"gpu_id": gpu_id}


def test_each_worker_uses_the_gpu_multi_model_server_gave_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_backend.worker_device(Context("3")) == torch.device("cuda", 3)
    assert torch_backend.worker_device(Context(None)) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_backend.worker_device(Context("3")) == torch.device("cpu")


def test_a_gpu_batch_is_pinned_then_copied_asynchronously(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, object]] = []

    def pin_memory(tensor: torch.Tensor) -> torch.Tensor:
        calls.append(("pin", None))
        return tensor

    def to(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(("to", (args, kwargs)))
        return tensor

    runner = dataclasses.replace(load(model_dir, "fp16").runner, device=torch.device("cuda", 1))
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    torch_backend.to_device(torch.zeros(2, 3, 32, 32), runner)
    assert [name for name, _ in calls] == ["pin", "to"]
    args, kwargs = calls[1][1]  # type: ignore[misc]
    assert args == (torch.device("cuda", 1),)
    assert kwargs == {
        "dtype": torch.float16,
        "memory_format": torch.channels_last,
        "non_blocking": True,
    }
