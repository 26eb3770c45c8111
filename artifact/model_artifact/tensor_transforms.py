"""The eval transform in plain torch: the same numbers as torchvision's v2 transforms
(PILToTensor, Resize(short side, antialias), CenterCrop, ToDtype(scale), Normalize),
bit for bit, without importing torchvision.

Why: importing torchvision imports torch._dynamo (about 2 s, through torchvision.ops), and
a serving worker needs none of it; every second of a worker's start-up is paid at every
scale-out. tests/unit/test_preprocessing.py compares the two outputs exactly.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from PIL import Image

from model_artifact.array_transforms import crop_origin, resized_size

# Where torch resizes uint8 images with antialiasing directly (as torchvision does there);
# elsewhere it goes through float32 and rounds back, as torchvision does too.
_NATIVE_UINT8_BILINEAR = ("AVX2", "AVX512")
_ARM = ("aarch64", "arm64")


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor 3 x H x W (a channels-last view, as torchvision's)."""
    pixels = torch.as_tensor(np.array(image, copy=True))
    return pixels.view(image.size[1], image.size[0], 3).permute(2, 0, 1)


def _resizes_uint8_natively(mode: str) -> bool:
    if mode == "bilinear":
        capability = torch.backends.cpu.get_cpu_capability()
        return capability in _NATIVE_UINT8_BILINEAR or platform.machine() in _ARM
    return True  # nearest and bicubic


def resize_short_side(image: torch.Tensor, short_side: int, mode: str) -> torch.Tensor:
    """uint8 3 x H x W -> uint8 3 x H' x W', antialiased except for `nearest`."""
    channels, height, width = image.shape
    size = resized_size(height, width, short_side)
    if size == (height, width):
        return image
    batch = image.reshape(1, channels, height, width)
    strides = batch.stride()
    if batch.is_contiguous(memory_format=torch.channels_last) and strides[0] != image.numel():
        # Give the fake batch dimension a channels-last stride, so that interpolate keeps
        # the layout (and picks the same kernel torchvision's resize ends up in).
        batch = batch.as_strided(batch.shape, (image.numel(), *strides[1:]))
    through_float = not _resizes_uint8_natively(mode)
    if through_float:
        batch = batch.to(torch.float32)
    antialias = mode != "nearest"
    align_corners = None if mode == "nearest" else False
    resized = F.interpolate(
        batch, size=list(size), mode=mode, align_corners=align_corners, antialias=antialias
    )
    if through_float:
        if mode == "bicubic":
            resized = resized.clamp_(0, 255)
        resized = resized.round_().to(torch.uint8)
    return resized.reshape(channels, *size)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    top, left = crop_origin(int(height), int(width), size)
    return image[..., top : top + size, left : left + size]


@dataclass(frozen=True)
class EvalTransform:
    """PIL RGB image -> normalised float32 tensor 3 x image_size x image_size."""

    resize_size: int
    image_size: int
    interpolation: str
    mean: torch.Tensor  # 3 x 1 x 1
    std: torch.Tensor  # 3 x 1 x 1

    @classmethod
    def build(
        cls,
        resize_size: int,
        image_size: int,
        interpolation: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> EvalTransform:
        def column(values: tuple[float, float, float]) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float32).view(-1, 1, 1)

        return cls(resize_size, image_size, interpolation, column(mean), column(std))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = resize_short_side(pil_to_uint8(image), self.resize_size, self.interpolation)
        pixels = center_crop(pixels, self.image_size)
        scaled = pixels.to(torch.float32).mul_(1.0 / 255)
        return scaled.sub_(self.mean).div_(self.std)
