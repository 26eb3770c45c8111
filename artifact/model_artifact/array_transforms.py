"""The eval transform in Pillow and numpy, for a serving image without torch.

The same definition as `tensor_transforms` (resize the short side with antialiasing,
centre-crop, scale to [0, 1], normalise), computed with Pillow's resampling filters, which
torch's antialiased resize was written to match. The two agree to a grey level or so per
pixel, not bit for bit: tests/unit/test_preprocessing.py bounds the difference, and
tests/contract/test_serve_backends.py shows the same top-1 on real photos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side at `short_side`, the long side truncated."""
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def crop_origin(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centred size x size crop."""
    return round((height - size) / 2.0), round((width - size) / 2.0)


def resize_short_side(image: Image.Image, short_side: int, mode: str) -> np.ndarray:
    """RGB image -> uint8 H' x W' x 3 with the short side at `short_side`."""
    height, width = resized_size(image.height, image.width, short_side)
    if (height, width) == (image.height, image.width):
        return np.asarray(image)
    if mode == "nearest":
        # torch's `nearest`: source index floor(destination x scale), not Pillow's centres.
        rows = np.minimum(
            (np.arange(height) * (image.height / height)).astype(np.int64), image.height - 1
        )
        columns = np.minimum(
            (np.arange(width) * (image.width / width)).astype(np.int64), image.width - 1
        )
        return np.asarray(image)[rows[:, None], columns[None, :]]
    return np.asarray(image.resize((width, height), _FILTERS[mode], reducing_gap=None))


@dataclass(frozen=True)
class ArrayTransform:
    """PIL RGB image -> normalised float32 array 3 x image_size x image_size."""

    resize_size: int
    image_size: int
    interpolation: str
    mean: np.ndarray  # 3 x 1 x 1, float32
    std: np.ndarray  # 3 x 1 x 1, float32

    @classmethod
    def build(
        cls,
        resize_size: int,
        image_size: int,
        interpolation: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> ArrayTransform:
        def column(values: tuple[float, float, float]) -> np.ndarray:
            return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)

        return cls(resize_size, image_size, interpolation, column(mean), column(std))

    def __call__(self, image: Image.Image) -> np.ndarray:
        pixels = resize_short_side(image, self.resize_size, self.interpolation)
        top, left = crop_origin(pixels.shape[0], pixels.shape[1], self.image_size)
        crop = pixels[top : top + self.image_size, left : left + self.image_size]
        scaled = crop.transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255)
        return (scaled - self.mean) / self.std
