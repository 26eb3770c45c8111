"""MIME types the serving job reads and writes (no heavy imports: `serve` uses them too)."""

from __future__ import annotations

JPEG = "image/jpeg"
PNG = "image/png"
X_IMAGE = "application/x-image"  # raw image bytes of any format Pillow reads
JSON = "application/json"
NPY = "application/x-npy"
ANY = "*/*"

RESPONSE_TYPES = (JSON, NPY)


def media_type(header: str | None) -> str | None:
    """`Image/JPEG; charset=x` -> `image/jpeg`; None for a missing or blank header."""
    if header is None:
        return None
    value = header.split(";", 1)[0].strip().lower()
    return value or None
