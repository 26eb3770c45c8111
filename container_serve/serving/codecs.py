"""Request decoders and response encoders, as lookup tables keyed by MIME type.

Decoders turn a request body into RGB images (the model's preprocessing runs later, in
`predict_fn`); encoders turn class probabilities into a response body. Every problem
with a request raises a ClientError carrying its HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from model_artifact.preprocessing import MAX_IMAGE_PIXELS, UnreadableImageError, open_rgb
from serving import content_types
from serving.errors import (
    BadRequestError,
    NotAcceptableError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

# Each decoded image becomes a float tensor of 3 x S x S (600 KB at S=224): bound a request's
# batch so that a 6 MB body of tiny images can't allocate gigabytes.
MAX_IMAGES_PER_REQUEST = 64
# Before preprocessing shrinks it, a decoded image holds 3 bytes per pixel, and PNG squeezes a
# blank grayscale image of 40 M pixels into ~40 KB: a per-image limit alone would let a 3.3 MB
# JSON body of 64 such images allocate 7.7 GB. So all the images of a request share one budget.
MAX_REQUEST_PIXELS = MAX_IMAGE_PIXELS

Decoder = Callable[[bytes], list[Image.Image]]
Encoder = Callable[[np.ndarray, Sequence[str], int | None], bytes]


def decode_image(body: bytes) -> list[Image.Image]:
    """Raw bytes of one image in any format Pillow reads (the Content-Type is not trusted)."""
    return [_open_image(body, where="the body")]


def decode_json_instances(body: bytes) -> list[Image.Image]:
    """`{"instances": [{"b64": "<base64 image bytes>"}, ...]}`, the TF-Serving style."""
    try:
        document = json.loads(body)
    except RecursionError:
        # Deeply nested arrays or objects: the decoder gives up before the document ends.
        raise BadRequestError("the JSON body is nested too deeply") from None
    except ValueError as error:  # not JSON, not UTF-8, or a number Python won't parse
        raise BadRequestError(f"the body is not valid JSON ({error})") from None
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequestError('expected a JSON object {"instances": [{"b64": "..."}, ...]}')
    _check_count(len(instances))
    images = []
    pixels_left = MAX_REQUEST_PIXELS
    for index, instance in enumerate(instances):
        encoded = instance.get("b64") if isinstance(instance, dict) else None
        if not isinstance(encoded, str):
            raise BadRequestError(f'instances[{index}] must be an object {{"b64": "..."}}')
        try:
            image_bytes = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError(f"instances[{index}].b64 is not valid base64") from None
        image = _open_image(image_bytes, where=f"instances[{index}]", pixels_left=pixels_left)
        pixels_left -= image.width * image.height
        images.append(image)
    return images


def decode_npy(body: bytes) -> list[Image.Image]:
    """An .npy array of uint8 pixels, H x W x 3 or N x H x W x 3; never unpickles.

    The header is checked before any allocation: np.load would allocate whatever shape
    the header declares, and with allow_pickle=True (the toolkit's default decoder) run
    arbitrary code.
    """
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise BadRequestError(f"npy format version {version} is not supported (1.0, 2.0)")
    except ValueError as error:
        raise BadRequestError(f"the body is not an .npy array ({error})") from None
    if dtype != np.uint8:
        raise BadRequestError(f"npy arrays must have dtype uint8, got {dtype}")
    if len(shape) not in (3, 4) or shape[-1] != 3 or min(shape) < 1:
        raise BadRequestError(f"npy arrays must be H x W x 3 or N x H x W x 3, got {shape}")
    height, width = shape[-3:-1]
    if height * width > MAX_IMAGE_PIXELS:
        raise BadRequestError(
            f"npy image is {width}x{height} pixels, outside 1..{MAX_IMAGE_PIXELS:,}"
        )
    _check_count(shape[0] if len(shape) == 4 else 1)
    data = body[stream.tell() :]
    if len(data) != math.prod(shape):
        raise BadRequestError(f"npy data holds {len(data)} bytes, its shape {shape} needs more")
    pixels = np.frombuffer(data, dtype=np.uint8).reshape(shape, order="F" if fortran_order else "C")
    batch = pixels if pixels.ndim == 4 else pixels[None]
    return [Image.fromarray(np.ascontiguousarray(image)) for image in batch]


DECODERS: dict[str, Decoder] = {
    content_types.JPEG: decode_image,
    content_types.PNG: decode_image,
    content_types.X_IMAGE: decode_image,
    content_types.JSON: decode_json_instances,
    content_types.NPY: decode_npy,
}


def decode(body: bytes | None, content_type: str | None) -> list[Image.Image]:
    """Request body -> RGB images, in request order."""
    decoder = DECODERS.get(content_types.media_type(content_type) or "")
    if decoder is None:
        given = "no Content-Type" if content_type is None else f"Content-Type {content_type!r}"
        raise UnsupportedMediaTypeError(
            f"{given} is not supported; use one of {', '.join(DECODERS)}"
        )
    if not body:
        raise BadRequestError("the request body is empty")
    return decoder(body)


# Pillow names the in-memory file in its messages ("<_io.BytesIO object at 0x7f...>").
_STREAM_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")


def _open_image(
    image_bytes: bytes, where: str, pixels_left: int = MAX_REQUEST_PIXELS
) -> Image.Image:
    """One image, within both the per-image limit and what is left of the request's budget
    (open_rgb checks the header's size before it decodes, so a bomb allocates nothing)."""
    limit = min(MAX_IMAGE_PIXELS, pixels_left)
    try:
        return open_rgb(image_bytes, max_pixels=limit)
    except UnreadableImageError as error:
        reason = _STREAM_REPR.sub("the bytes", str(error))
        if limit < MAX_IMAGE_PIXELS:  # the limit open_rgb names is the budget's rest: say so
            reason += f" ({pixels_left:,} of the request's {MAX_REQUEST_PIXELS:,} pixels left)"
        raise BadRequestError(f"{where}: {reason}") from None


def _check_count(count: int) -> None:
    if count > MAX_IMAGES_PER_REQUEST:
        raise PayloadTooLargeError(
            f"{count} images in one request; send at most {MAX_IMAGES_PER_REQUEST}"
        )


def encode_json(probabilities: np.ndarray, classes: Sequence[str], top_k: int | None) -> bytes:
    """One entry per image: best label, its probability, and all (or the top k) classes."""
    predictions = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[: top_k or len(classes)]
        best = int(order[0])
        predictions.append(
            {
                "label": classes[best],
                "probability": float(row[best]),
                "probabilities": {classes[int(i)]: float(row[int(i)]) for i in order},
            }
        )
    return json.dumps({"predictions": predictions}).encode("utf-8")


def encode_npy(probabilities: np.ndarray, classes: Sequence[str], top_k: int | None) -> bytes:
    """float32 N x C probabilities in the model's class order (top_k does not apply)."""
    buffer = io.BytesIO()
    np.save(buffer, probabilities.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


ENCODERS: dict[str, Encoder] = {
    content_types.JSON: encode_json,
    content_types.NPY: encode_npy,
}


def negotiate(accept: str | None, default: str) -> str:
    """The response type: the first supported entry of Accept; `*/*` or none -> default."""
    if accept is None or not accept.strip():
        return default
    for entry in accept.split(","):
        wanted = content_types.media_type(entry)
        if wanted in (content_types.ANY, "application/*"):
            return default
        if wanted in ENCODERS:
            return wanted
    raise NotAcceptableError(
        f"Accept {accept!r} is not supported; use one of {', '.join(ENCODERS)}"
    )


def encode(
    probabilities: np.ndarray, classes: Sequence[str], response_type: str, top_k: int | None
) -> bytes:
    encoder = ENCODERS.get(response_type)
    if encoder is None:
        raise NotAcceptableError(f"{response_type!r} is not one of {', '.join(ENCODERS)}")
    return encoder(probabilities, classes, top_k)


_ATTRIBUTE = re.compile(r"\s*([A-Za-z_][\w-]*)\s*=\s*([^;,]*)")


def parse_top_k(custom_attributes: str | None, num_classes: int) -> int | None:
    """`top_k=N` from SageMaker's CustomAttributes (`key=value` pairs split by ; or ,)."""
    if not custom_attributes:
        return None
    for part in re.split(r"[;,]", custom_attributes):
        match = _ATTRIBUTE.fullmatch(part)
        if match and match.group(1).lower() == "top_k":
            raw = match.group(2).strip()
            # isdigit alone accepts digits int() rejects ("²"): a ValueError would be a 500.
            if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= num_classes:
                raise BadRequestError(f"top_k must be an integer in 1..{num_classes}, got {raw!r}")
            return int(raw)
    return None
