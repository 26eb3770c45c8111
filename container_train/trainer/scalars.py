"""TensorBoard scalars (losses, accuracies, learning rates per epoch) and the evaluation's
images, without Debugger.

SageMaker uploads <base>/output/tensorboard while the job runs when the job has a
TensorBoardOutputConfig; TensorBoard, SageMaker's TensorBoard app and `report` read it.

The event file is written here rather than through torch.utils.tensorboard, which needs
the `tensorboard` package in the image and adds about 0.8 s of imports to every job (a
tenth of a tuning trial that finds its features cached). Scalars need little of the
format: TFRecord framing (length, payload, masked CRC-32C of each) around `Event`
protocol buffers (tensorflow/core/util/event.proto) holding `Summary.Value`s with a tag
and a simple_value, or an encoded PNG (tensorflow/core/framework/summary.proto). A test
reads the file back with TensorBoard's own reader.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path

FILE_VERSION = b"brain.Event:2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@cache
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def _masked_crc32c(data: bytes) -> int:
    table, crc = _crc32c_table(), 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(payload: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the payload, the payload's masked CRC."""
    length = struct.pack("<Q", len(payload))
    return (
        length
        + struct.pack("<I", _masked_crc32c(length))
        + payload
        + struct.pack("<I", _masked_crc32c(payload))
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, wall_time: float, body: bytes) -> bytes:
    """Event{wall_time = 1 (double), step = 2 (int64)} followed by `body`."""
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + body


def _summary(values: Mapping[str, float]) -> bytes:
    """Event.summary = 5: Summary{value = 1: Value{tag = 1, simple_value = 2 (float)}}."""
    summary = b"".join(
        _length_delimited(1, _length_delimited(1, tag.encode()) + b"\x15" + struct.pack("<f", v))
        for tag, v in values.items()
    )
    return _length_delimited(5, summary)


def _image_summary(tag: str, png: bytes) -> bytes:
    """Event.summary = 5: Summary{value = 1: Value{tag = 1, image = 4: Image{height = 1,
    width = 2, colorspace = 3 (4: RGBA), encoded_image_string = 4}}}."""
    width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR chunk
    image = (
        b"\x08" + _varint(height) + b"\x10" + _varint(width) + b"\x18" + _varint(4)
    ) + _length_delimited(4, png)
    value = _length_delimited(1, tag.encode()) + _length_delimited(4, image)
    return _length_delimited(5, _length_delimited(1, value))


class Scalars:
    """An event file in `log_dir`; every `add` is flushed, so an upload sees it at once."""

    def __init__(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        with self.path.open("ab") as handle:
            handle.write(_record(_event(0, time.time(), _length_delimited(3, FILE_VERSION))))

    def add(self, step: int, values: Mapping[str, float]) -> None:
        self._write(step, _summary(values))

    def add_image(self, step: int, tag: str, png: bytes) -> None:
        """A PNG file's bytes, shown in TensorBoard's Images tab."""
        if not png.startswith(PNG_SIGNATURE):
            raise ValueError(f"the image for {tag!r} is not a PNG")
        self._write(step, _image_summary(tag, png))

    def _write(self, step: int, body: bytes) -> None:
        with self.path.open("ab") as handle:
            handle.write(_record(_event(step, time.time(), body)))
