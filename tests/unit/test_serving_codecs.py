"""Request decoders, response encoders and content negotiation (serving/codecs.py)."""

from __future__ import annotations

import base64
import io
import json
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from serving import codecs
from serving.errors import (
    BadRequestError,
    NotAcceptableError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 120).save(buffer, fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels: a decompression bomb's signature."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def b64_instances(*payloads: bytes) -> bytes:
    instances = [{"b64": base64.b64encode(payload).decode()} for payload in payloads]
    return json.dumps({"instances": instances}).encode()


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        ("image/jpeg", "JPEG"),
        ("image/png", "PNG"),
        ("application/x-image", "PNG"),
        ("Image/JPEG; charset=binary", "JPEG"),
    ],
)
def test_image_bodies_decode_to_one_rgb_image(content_type: str, fmt: str) -> None:
    [image] = codecs.decode(image_bytes(fmt, mode="L"), content_type)
    assert (image.mode, image.size) == ("RGB", (40, 30))


def test_json_instances_decode_in_order() -> None:
    body = b64_instances(image_bytes("PNG", (10, 10)), image_bytes("JPEG", (20, 10)))
    images = codecs.decode(body, "application/json")
    assert [image.size for image in images] == [(10, 10), (20, 10)]


def test_npy_single_image_and_batch() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    [single] = codecs.decode(npy_bytes(pixels[0]), "application/x-npy")
    batch = codecs.decode(npy_bytes(pixels), "application/x-npy")
    assert np.array_equal(np.asarray(single), pixels[0])
    assert [np.array_equal(np.asarray(image), pixels[i]) for i, image in enumerate(batch)] == [
        True,
        True,
    ]


def test_npy_in_fortran_order_keeps_its_pixels() -> None:
    pixels = np.asfortranarray(np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3))
    [image] = codecs.decode(npy_bytes(pixels), "application/x-npy")
    assert np.array_equal(np.asarray(image), pixels)


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "image/gif", "text/csv", "application/x-www-form-urlencoded"],
)
def test_unsupported_content_type_is_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as raised:
        codecs.decode(image_bytes(), content_type)
    assert raised.value.status_code == 415
    assert "image/jpeg" in raised.value.message  # names what is supported


def npy_claiming(height: int, width: int) -> bytes:
    """An .npy header declaring height x width x 3 uint8 pixels, followed by 3 bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|u1", "fortran_order": False, "shape": (height, width, 3)}
    )
    return buffer.getvalue() + b"\0" * 3


def npy_claiming_shape(shape: tuple[int, ...]) -> bytes:
    """An .npy header declaring `shape` (uint8) followed by as many bytes as its product."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue() + b"\0" * max(0, int(np.prod(shape)))


BAD_BODIES = {
    "empty image": ("image/jpeg", b""),
    "empty json": ("application/json", b""),
    "not an image": ("image/jpeg", b"definitely not a jpeg"),
    "truncated jpeg": ("image/jpeg", image_bytes()[:50]),
    "bomb header": ("image/png", png_claiming(20_000, 20_000)),
    "bad json": ("application/json", b"{not json"),
    "json without instances": ("application/json", b'{"images": []}'),
    "json empty instances": ("application/json", b'{"instances": []}'),
    "json list": ("application/json", b"[1, 2]"),
    "instance not object": ("application/json", b'{"instances": ["abc"]}'),
    "bad base64": ("application/json", b'{"instances": [{"b64": "@@not base64@@"}]}'),
    "b64 not image": ("application/json", b64_instances(image_bytes(), b"garbage")),
    "npy not npy": ("application/x-npy", b"garbage bytes"),
    "npy pickle": ("application/x-npy", pickle.dumps({"a": 1})),
    "npy object array": (
        "application/x-npy",
        npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True),
    ),
    "npy float": ("application/x-npy", npy_bytes(np.zeros((4, 4, 3), dtype=np.float32))),
    "npy gray": ("application/x-npy", npy_bytes(np.zeros((4, 4), dtype=np.uint8))),
    "npy 4 channels": ("application/x-npy", npy_bytes(np.zeros((4, 4, 4), dtype=np.uint8))),
    "npy truncated": ("application/x-npy", npy_bytes(np.zeros((4, 4, 3), dtype=np.uint8))[:-5]),
    "npy too many pixels": ("application/x-npy", npy_claiming(7_000, 7_000)),
    # Documents the JSON decoder itself cannot read, whatever their shape.
    "json nested too deeply": ("application/json", b"[" * 100_000),
    "json object nested too deeply": ("application/json", b'{"a":' * 50_000),
    "json number too long": ("application/json", b'{"instances": [' + b"7" * 5_000 + b"]}"),
    "json not utf-8": ("application/json", b'{"instances": "\xff\xfe"}'),
    # Shapes numpy accepts in a header but no image has.
    "npy negative dims": ("application/x-npy", npy_claiming_shape((2, -5, -5, 3))),
    "npy zero height": ("application/x-npy", npy_claiming_shape((0, 4, 3))),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_bodies_are_400_with_a_one_line_reason(case: str) -> None:
    content_type, body = BAD_BODIES[case]
    with pytest.raises(BadRequestError) as raised:
        codecs.decode(body, content_type)
    assert raised.value.status_code == 400
    assert "\n" not in raised.value.message and "Traceback" not in raised.value.message


def test_npy_header_declaring_a_huge_array_is_rejected_before_allocating() -> None:
    huge = npy_claiming(9_999_999, 9_999)
    with pytest.raises(BadRequestError):
        codecs.decode(huge, "application/x-npy")


def test_reasons_do_not_show_object_addresses() -> None:
    with pytest.raises(BadRequestError) as raised:
        codecs.decode(b"plain text", "image/jpeg")
    assert "0x" not in raised.value.message
    assert "cannot identify image file the bytes" in raised.value.message


def test_bomb_reason_names_the_pixel_limit() -> None:
    with pytest.raises(BadRequestError, match="over the limit"):
        codecs.decode(png_claiming(7_000, 7_000), "image/png")


def test_too_many_images_in_one_request_is_413() -> None:
    count = codecs.MAX_IMAGES_PER_REQUEST + 1
    json_body = json.dumps({"instances": [{"b64": "AA=="}] * count}).encode()
    npy_body = npy_bytes(np.zeros((count, 2, 2, 3), dtype=np.uint8))
    for content_type, body in (("application/json", json_body), ("application/x-npy", npy_body)):
        with pytest.raises(PayloadTooLargeError) as raised:
            codecs.decode(body, content_type)
        assert raised.value.status_code == 413


PROBABILITIES = np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]], dtype=np.float32)
CLASSES = ("cat", "dog", "fox")


def test_json_response_has_one_prediction_per_image() -> None:
    document = json.loads(codecs.encode(PROBABILITIES, CLASSES, "application/json", None))
    first, second = document["predictions"]
    assert first["label"] == "dog"
    assert first["probability"] == pytest.approx(0.7)
    assert first["probabilities"] == pytest.approx({"cat": 0.2, "dog": 0.7, "fox": 0.1})
    assert second["label"] == "cat"


def test_top_k_keeps_the_k_most_likely_in_order() -> None:
    document = json.loads(codecs.encode(PROBABILITIES, CLASSES, "application/json", 2))
    assert [list(p["probabilities"]) for p in document["predictions"]] == [
        ["dog", "cat"],
        ["cat", "fox"],
    ]


def test_npy_response_round_trips_without_pickle() -> None:
    body = codecs.encode(PROBABILITIES, CLASSES, "application/x-npy", None)
    decoded = np.load(io.BytesIO(body), allow_pickle=False)
    assert decoded.dtype == np.float32
    assert np.array_equal(decoded, PROBABILITIES)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/x-npy", "application/x-npy"),
        ("text/csv, application/x-npy;q=0.9", "application/x-npy"),
        ("Application/JSON; charset=utf-8", "application/json"),
    ],
)
def test_negotiate_picks_the_first_supported_type(accept: str | None, expected: str) -> None:
    assert codecs.negotiate(accept, "application/json") == expected


@pytest.mark.parametrize("accept", ["text/csv", "image/png", "text/html, text/plain"])
def test_unsupported_accept_is_406(accept: str) -> None:
    with pytest.raises(NotAcceptableError) as raised:
        codecs.negotiate(accept, "application/json")
    assert raised.value.status_code == 406


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [(None, None), ("", None), ("top_k=1", 1), ("trace=on; top_k=2", 2), ("a=b,TOP_K=3", 3)],
)
def test_top_k_comes_from_custom_attributes(attributes: str | None, expected: int | None) -> None:
    assert codecs.parse_top_k(attributes, num_classes=3) == expected


@pytest.mark.parametrize("attributes", ["top_k=0", "top_k=4", "top_k=two", "top_k=-1"])
def test_bad_top_k_is_400(attributes: str) -> None:
    with pytest.raises(BadRequestError):
        codecs.parse_top_k(attributes, num_classes=3)


def blank_png(width: int, height: int) -> bytes:
    """A real, decodable grayscale PNG: PNG squeezes a blank image to almost nothing."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_images_of_one_request_share_one_pixel_budget() -> None:
    """Each image is under the per-image limit, together they are over: a tiny body must
    not make the server decode (and allocate) them all."""
    big = blank_png(5_000, 5_000)  # 25 M pixels each; 75 MB once decoded as RGB
    body = b64_instances(big, big)
    assert len(body) < 100_000
    with pytest.raises(BadRequestError) as raised:
        codecs.decode(body, "application/json")
    assert raised.value.status_code == 400
    assert raised.value.message.startswith("instances[1]: ")
    assert "over the limit of 15,000,000" in raised.value.message
    assert f"of the request's {codecs.MAX_REQUEST_PIXELS:,} pixels left" in raised.value.message


def test_the_pixel_budget_counts_what_each_image_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codecs, "MAX_REQUEST_PIXELS", 3 * 40 * 30)
    three = b64_instances(*[image_bytes("PNG", (40, 30))] * 3)
    assert len(codecs.decode(three, "application/json")) == 3  # exactly the budget
    with pytest.raises(BadRequestError) as raised:
        codecs.decode(b64_instances(*[image_bytes("PNG", (40, 30))] * 4), "application/json")
    assert raised.value.message.startswith("instances[3]: image is 40x30 pixels, over the limit")


@pytest.mark.parametrize("attributes", ["top_k=²", "top_k=¹"])
def test_top_k_with_digits_int_rejects_is_400_not_a_crash(attributes: str) -> None:
    """str.isdigit() accepts superscripts that int() rejects."""
    with pytest.raises(BadRequestError):
        codecs.parse_top_k(attributes, num_classes=3)


def test_response_types_are_what_the_encoders_write() -> None:
    """`serve` checks its default Accept against content_types.RESPONSE_TYPES."""
    from serving import content_types  # noqa: PLC0415

    assert set(content_types.RESPONSE_TYPES) == set(codecs.ENCODERS)
