"""MIME types the serving container reads and writes, and the file suffixes they go with.

The toolkit's names where it has them (sagemaker_inference.content_types); the image
types are this project's. Clients (the launch CLI) label files by `BY_SUFFIX`.
"""

from __future__ import annotations

from sagemaker_inference.content_types import ANY, JSON, NPY

JPEG = "image/jpeg"
PNG = "image/png"
X_IMAGE = "application/x-image"  # raw image bytes of any format Pillow reads

BY_SUFFIX = {".jpg": JPEG, ".jpeg": JPEG, ".png": PNG, ".npy": NPY, ".json": JSON}
IMAGE_SUFFIXES = tuple(suffix for suffix, kind in BY_SUFFIX.items() if kind.startswith("image/"))
# The types serving.codecs.ENCODERS writes, listed here so that `serve` can check its default
# Accept without importing numpy (a unit test keeps the two in step).
RESPONSE_TYPES = (JSON, NPY)

__all__ = [
    "ANY",
    "BY_SUFFIX",
    "IMAGE_SUFFIXES",
    "JPEG",
    "JSON",
    "NPY",
    "PNG",
    "RESPONSE_TYPES",
    "X_IMAGE",
]


def media_type(header: str | None) -> str | None:
    """`Image/JPEG; charset=x` -> `image/jpeg`; None for a missing or blank header."""
    if header is None:
        return None
    value = header.split(";", 1)[0].strip().lower()
    return value or None


def of_file(name: str) -> str:
    """The content type a client sends a file as: by its suffix, else raw image bytes."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    return BY_SUFFIX.get(suffix, X_IMAGE)
