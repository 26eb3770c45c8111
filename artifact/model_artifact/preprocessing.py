"""Image preprocessing, defined once for training, evaluation and serving.

The training job records a `Preprocessing` in `model_config.json`; serving rebuilds the
same transform from it, in torch (`eval_transform`) or, where there is no torch, in Pillow
and numpy (`array_transform`). torch is imported only where a torch transform is built:
reading a model's config (as `serve` does before it starts the model server) must stay
fast, and must work without torch.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from PIL import Image, ImageOps

from model_artifact.array_transforms import ArrayTransform

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Decompression-bomb guard: a 6 MB request can still declare billions of pixels.
MAX_IMAGE_PIXELS = 40_000_000

# The classic ImageNet eval recipe resizes the short side to size / 0.875 before the centre crop.
CROP_RATIO = 0.875

# torchvision's InterpolationMode values that suit photographs.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


class UnreadableImageError(ValueError):
    """The bytes are not an image Pillow can decode, or the image is too large."""


@dataclass(frozen=True)
class Preprocessing:
    """Eval preprocessing: resize the short side, centre-crop, scale to [0, 1], normalise."""

    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if not 1 <= self.image_size <= self.resize_size:
            raise ValueError(
                f"need 1 <= image_size <= resize_size, got {self.image_size} and {self.resize_size}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std above 0")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}"
            )

    @classmethod
    def for_image_size(cls, image_size: int) -> Preprocessing:
        return cls(image_size=image_size, resize_size=round(image_size / CROP_RATIO))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """The inverse of to_dict; keys it does not know (older documents) are ignored."""
        known = {f.name: values[f.name] for f in fields(cls) if f.name in values}
        for name in ("mean", "std"):
            if name in known:
                known[name] = tuple(known[name])
        return cls(**known)


def open_rgb(
    source: str | Path | bytes | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode any image Pillow reads (grayscale, RGBA, palette, CMYK, EXIF-rotated) as RGB."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(stream) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UnreadableImageError(
                    f"image is {width}x{height} pixels, over the limit of {max_pixels:,}"
                )
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
    except UnreadableImageError:
        raise
    except Exception as error:
        # Pillow's format plugins fail on crafted bytes with OSError and ValueError, but also
        # with struct.error, IndexError, ZeroDivisionError and others: all the same to a caller.
        raise UnreadableImageError(f"not a decodable image ({error})") from error


def eval_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised float tensor of shape (3, image_size, image_size).

    torchvision's eval recipe (resize the short side with antialiasing, centre-crop, scale,
    normalise), computed in plain torch: see model_artifact/tensor_transforms.py.
    """
    # Imported here (torch takes about 3 s): see the module docstring.
    from model_artifact.tensor_transforms import EvalTransform  # noqa: PLC0415

    return EvalTransform.build(
        preprocessing.resize_size,
        preprocessing.image_size,
        preprocessing.interpolation,
        preprocessing.mean,
        preprocessing.std,
    )


def array_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], Any]:
    """PIL RGB image -> normalised float32 numpy array (3, image_size, image_size): the
    eval transform without torch (model_artifact/array_transforms.py)."""
    return ArrayTransform.build(
        preprocessing.resize_size,
        preprocessing.image_size,
        preprocessing.interpolation,
        preprocessing.mean,
        preprocessing.std,
    )
