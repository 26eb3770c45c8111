"""The two ways a worker computes: TorchScript on torch (`torch_backend`, the GPU image) or
ONNX Runtime (`onnx_backend`, the CPU image, which has no torch).

A backend is chosen once per server (contract.serving_backend) and only its module is
imported: the handler, batching and every error stay the same on both. Each module has a
`load_runner(model_dir, config, choice, context)` that returns a `Runner`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from model_artifact.config import ModelConfig


class Runner(Protocol):
    """A loaded network: RGB images in, logits out."""

    @property
    def precision(self) -> str:
        """What it computes in: fp32, bf16, fp16 or int8."""
        ...

    @property
    def place(self) -> str:
        """Where it computes, for the log: cpu, cuda:0."""
        ...

    @property
    def threads(self) -> int: ...

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 images x classes; a failure of the network raises RuntimeError."""
        ...


class RunnerLoader(Protocol):
    def __call__(
        self, model_dir: Path, config: ModelConfig, choice: str, context: Any
    ) -> Runner: ...


def loader(backend: str) -> RunnerLoader:
    """`backend`'s load_runner; its module (and torch or onnxruntime) imported now."""
    module = importlib.import_module(f"{__name__}.{backend}_backend")
    load: RunnerLoader = module.load_runner
    return load
