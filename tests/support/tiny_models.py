"""A tiny TorchScript model with the artifact's interface, and images for it: the unit
tests of the serving handler load it in milliseconds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model_artifact.config import ModelConfig
from model_artifact.preprocessing import Preprocessing
from model_artifact.torchscript import export_model

CLASSES = ["cat", "dog"]


class TinyNet(torch.nn.Module):
    """A conv net with the artifact's interface: (N, 3, S, S) -> (N, classes) logits."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


def write_model_dir(model_dir: Path, classes: list[str] = CLASSES, num_outputs: int = 2) -> Path:
    """A model directory as the training job writes it, around TinyNet."""
    torch.manual_seed(0)
    config = ModelConfig(classes=tuple(classes), preprocessing=Preprocessing.for_image_size(32))
    export_model(model_dir, TinyNet(num_outputs), config)
    return model_dir


def photo(colour: tuple[int, int, int], size: tuple[int, int] = (50, 40)) -> Image.Image:
    pixels = np.random.default_rng(sum(colour)).integers(0, 256, (size[1], size[0], 3))
    return Image.fromarray((pixels // 2 + np.array(colour) // 2).astype(np.uint8))


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()
