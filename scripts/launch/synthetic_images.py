"""Small generated ImageFolder data sets, so the demo and the tests run offline.

Each class has its own colour and stripe direction plus noise: easy enough that a
few epochs of a small model learn it, varied enough that the task is not trivial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASS_STYLES = {
    "cat": ((200, 120, 60), 0),  # warm, horizontal stripes
    "dog": ((60, 110, 200), 1),  # cool, vertical stripes
}


def _style_of(label: str) -> tuple[tuple[int, int, int], int]:
    """A stable colour and stripe direction for any other class name."""
    seed = sum(label.encode())
    return (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256), seed % 2


def make_image(
    label: str, rng: np.random.Generator, size: tuple[int, int] = (64, 48)
) -> Image.Image:
    width, height = size
    colour, axis = CLASS_STYLES.get(label, _style_of(label))
    base = np.empty((height, width, 3), dtype=np.float32)
    base[:] = colour
    stripes = (np.indices((height, width))[axis] // 6) % 2
    base += stripes[..., None] * 40.0
    base += rng.normal(0, 25, size=base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def make_image_folder(
    root: Path,
    per_class: int,
    classes: tuple[str, ...] = ("cat", "dog"),
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> Path:
    """Write `per_class` JPEGs for each class under root/<class>/."""
    rng = np.random.default_rng(seed)
    for label in classes:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            make_image(label, rng, size).save(folder / f"{label}.{index}.jpg", quality=90)
    return root


def make_dataset(
    root: Path,
    per_class: int = 12,
    size: tuple[int, int] = (64, 48),
    classes: tuple[str, ...] = ("cat", "dog"),
) -> Path:
    """A train/valid/test data set laid out as the training job's channels expect."""
    for split, seed in (("train", 0), ("valid", 1), ("test", 2)):
        make_image_folder(root / split, per_class, classes, size=size, seed=seed)
    return root
