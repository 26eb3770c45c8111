"""TorchScript on torch: `model.pt` on this worker's device (the GPU multi-model-server gave
it, else the CPU), channels_last, its weights cast once to the serving precision."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from model_artifact import precision, torchscript
from model_artifact.config import ArtifactError, ModelConfig
from model_artifact.preprocessing import eval_transform
from serving.errors import first_line


@dataclass(frozen=True)
class TorchRunner:
    network: torch.jit.ScriptModule
    transform: Callable[[Image.Image], torch.Tensor]
    device: torch.device
    precision: str = "fp32"  # what the network computes in (model_artifact.precision)

    @property
    def place(self) -> str:
        return str(self.device)

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    @property
    def input_dtype(self) -> torch.dtype:
        return precision.dtype(self.precision) or torch.float32

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.stack([self.transform(image) for image in images])
            return self.network(to_device(batch, self)).float().cpu().numpy()


def load_runner(model_dir: Path, config: ModelConfig, choice: str, context: Any) -> TorchRunner:
    return load(model_dir, config, worker_device(context), choice)


def load(model_dir: Path, config: ModelConfig, device: torch.device, choice: str) -> TorchRunner:
    """The artifact on `device`, channels_last, cast to the precision `choice` resolves to."""
    chosen = precision.resolve(choice, device)
    try:
        network = torchscript.load_model(model_dir, config, device)
    except (RuntimeError, ValueError, OSError) as error:
        raise ArtifactError(
            f"{config.model_file} is not a TorchScript model: {first_line(error)}"
        ) from None
    # channels_last: oneDNN's and cuDNN's fast convolution kernels work in that layout.
    network = network.to(memory_format=torch.channels_last)
    dtype = precision.dtype(chosen)
    if dtype is not None:  # weights cast once, not per call as autocast would
        network = network.to(dtype)
    return TorchRunner(network, eval_transform(config.preprocessing), device, chosen)


def worker_device(context: Any = None) -> torch.device:
    """The GPU multi-model-server assigned to this worker, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    gpu_id = context.system_properties.get("gpu_id") if context is not None else None
    return torch.device("cuda", int(gpu_id or 0))


def to_device(batch: torch.Tensor, runner: TorchRunner) -> torch.Tensor:
    if runner.device.type == "cuda":
        # Page-locked memory: the copy to the GPU needs no staging copy and runs async.
        batch = batch.pin_memory()
    return batch.to(
        runner.device,
        dtype=runner.input_dtype,
        memory_format=torch.channels_last,
        non_blocking=True,
    )
