import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_artifact.preprocessing import (
    Preprocessing,
    UnreadableImageError,
    array_transform,
    eval_transform,
    open_rgb,
)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "payload",
    [
        _encode(RGB, "JPEG"),
        _encode(RGB, "PNG"),
        _encode(RGB.convert("L"), "PNG"),
        _encode(RGB.convert("RGBA"), "PNG"),
        _encode(RGB.convert("P"), "PNG"),
        _encode(RGB.convert("CMYK"), "JPEG"),
        _encode(RGB.resize((33, 33)), "JPEG"),
    ],
    ids=["jpeg", "png", "grayscale", "rgba", "palette", "cmyk", "33px"],
)
def test_any_pillow_image_becomes_rgb(payload: bytes) -> None:
    image = open_rgb(payload)
    assert image.mode == "RGB"
    tensor = eval_transform(Preprocessing.for_image_size(32))(image)
    assert tensor.shape == (3, 32, 32)
    assert tensor.dtype == torch.float32


def test_exif_rotation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image = open_rgb(_encode(RGB, "JPEG", exif=exif))
    assert image.size == (40, 60)


@pytest.mark.parametrize("payload", [b"", b"not an image", _encode(RGB, "JPEG")[:200]])
def test_undecodable_bytes_raise_unreadable(payload: bytes) -> None:
    with pytest.raises(UnreadableImageError):
        open_rgb(payload)


@pytest.mark.parametrize("failure", [struct.error("bad"), IndexError("x"), ZeroDivisionError()])
def test_any_decoder_failure_is_an_unreadable_image(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """Pillow's format plugins fail on crafted bytes with many exception types."""

    def broken_open(stream: object) -> object:
        raise failure

    monkeypatch.setattr(Image, "open", broken_open)
    with pytest.raises(UnreadableImageError, match="not a decodable image"):
        open_rgb(_encode(RGB, "PNG"))


def test_pixel_limit_stops_decompression_bombs() -> None:
    with pytest.raises(UnreadableImageError, match="over the limit"):
        open_rgb(_encode(RGB, "PNG"), max_pixels=100)


def test_eval_transform_resizes_short_side_then_crops_and_normalises() -> None:
    preprocessing = Preprocessing.for_image_size(224)
    assert preprocessing.resize_size == 256
    white = Image.new("RGB", (500, 375), (255, 255, 255))
    tensor = eval_transform(preprocessing)(white)
    expected = [(1 - m) / s for m, s in zip(preprocessing.mean, preprocessing.std, strict=True)]
    assert tensor.shape == (3, 224, 224)
    assert torch.allclose(tensor.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-4)


def test_round_trips_through_its_json_form() -> None:
    preprocessing = Preprocessing.for_image_size(96)
    assert Preprocessing.from_dict(preprocessing.to_dict()) == preprocessing


def torchvision_eval_transform(preprocessing: Preprocessing) -> object:
    """The reference: torchvision's v2 transforms for the same recipe."""
    from torchvision.transforms import v2  # noqa: PLC0415

    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(
                preprocessing.resize_size,
                interpolation=v2.InterpolationMode(preprocessing.interpolation),
                antialias=True,
            ),
            v2.CenterCrop(preprocessing.image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
        ]
    )


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("size", [(500, 375), (375, 500), (64, 64), (33, 97), (257, 256)])
@pytest.mark.parametrize(("image_size", "resize_size"), [(224, 256), (64, 73), (32, 32)])
def test_eval_transform_equals_torchvision_bit_for_bit(
    interpolation: str, size: tuple[int, int], image_size: int, resize_size: int
) -> None:
    """Serving computes the transform without torchvision; a model trained with
    torchvision's numbers must see exactly the same input tensor."""
    preprocessing = Preprocessing(
        image_size=image_size, resize_size=resize_size, interpolation=interpolation
    )
    rng = np.random.default_rng(size[0] * 7 + size[1])
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    expected = torchvision_eval_transform(preprocessing)(image)  # type: ignore[operator]
    assert torch.equal(eval_transform(preprocessing)(image), expected)


def test_serving_preprocessing_does_not_import_torchvision() -> None:
    script = (
        "import sys\n"
        "from PIL import Image\n"
        "from model_artifact.preprocessing import Preprocessing, eval_transform\n"
        "eval_transform(Preprocessing.for_image_size(32))(Image.new('RGB', (40, 30)))\n"
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


# The Pillow and numpy transform (the ONNX backend's) against torch's: Pillow's resampling
# rounds its fixed-point sums differently, by at most this many grey levels per pixel.
GREY_LEVELS = {"bilinear": 1, "bicubic": 2, "nearest": 0}


def largest_grey_level_difference(preprocessing: Preprocessing, image: Image.Image) -> float:
    expected = eval_transform(preprocessing)(image).numpy()
    computed = array_transform(preprocessing)(image)
    assert computed.shape == expected.shape and computed.dtype == np.float32
    std = np.asarray(preprocessing.std, dtype=np.float32).reshape(-1, 1, 1)
    return float((np.abs(computed - expected) * std * 255).max())


@pytest.mark.parametrize("interpolation", list(GREY_LEVELS))
@pytest.mark.parametrize("size", [(300, 200), (200, 300), (57, 45), (256, 256)])
def test_the_array_transform_follows_the_torch_transform(
    interpolation: str, size: tuple[int, int]
) -> None:
    """Down- and upscaled, landscape and portrait, or no resize at all."""
    preprocessing = Preprocessing(interpolation=interpolation)
    image = RGB.resize(size, Image.Resampling.BICUBIC)
    difference = largest_grey_level_difference(preprocessing, image)
    assert difference <= GREY_LEVELS[interpolation] + 0.01


@pytest.mark.photos
def test_the_array_transform_follows_the_torch_transform_on_every_test_photo(
    photos_dir: Path,
) -> None:
    preprocessing = Preprocessing()  # bilinear, 224 px: the training job's default
    photos = sorted(path for path in (photos_dir / "test").glob("*/*") if path.is_file())
    largest = max(largest_grey_level_difference(preprocessing, open_rgb(p)) for p in photos)
    print(f"{len(photos)} photos: at most {largest:.2f} grey levels apart")
    assert largest <= GREY_LEVELS["bilinear"] + 0.01
