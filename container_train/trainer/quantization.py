"""model.int8.onnx: static int8 quantization of model.onnx, and how its answers agree with fp32.

Torch-free (onnxruntime and numpy): images arrive preprocessed, as float32 arrays.

The recipe: QDQ format, weights int8 per output channel, activations uint8 with MinMax
ranges calibrated on real images (random inputs would make those ranges meaningless).
A badly configured quantization (signed activations in the operator format, dynamic
quantization of convolutions) takes ResNet50 to chance, and a good one can still fail
one class: that is why the agreement is measured per class as well as overall.

Weights use 7 of their 8 bits (`reduce_range`): on x86 CPUs without VNNI (AVX2, AVX-512
before Cascade Lake), onnxruntime's u8s8 kernels add pairs of 8-bit products in 16 bits,
which can saturate with full-range weights. The model is quantized once and may be
served on either kind of CPU.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from model_artifact.config import ONNX_INPUT, ONNX_OUTPUT, Int8Agreement

CALIBRATION_BATCH = 8
INFERENCE_BATCH = 16


class _Batches(CalibrationDataReader):
    """The calibration images, a few at a time, as quantize_static reads them."""

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        starts = range(0, len(images), batch_size)
        self._batches = iter([{ONNX_INPUT: images[i : i + batch_size]} for i in starts])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


class _QuantizerChatter(logging.Filter):
    """What onnxruntime's quantization tools log at INFO through the root logger (a line
    for each bias they copy, hundreds); their warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def _without_quantizer_chatter() -> Iterator[None]:
    """Only the quantization tools' warnings, from their own loggers and the root logger."""
    chatter = _QuantizerChatter()
    own = logging.getLogger("onnxruntime")
    level = own.level
    logging.getLogger().addFilter(chatter)
    own.setLevel(logging.WARNING)
    try:
        yield
    finally:
        own.setLevel(level)
        logging.getLogger().removeFilter(chatter)


def quantize_int8(fp32_model: Path, int8_model: Path, calibration: np.ndarray) -> None:
    """Write the int8 version of `fp32_model`, its activation ranges from `calibration`."""
    with (
        tempfile.TemporaryDirectory(prefix="quantize-", dir=int8_model.parent) as work,
        _without_quantizer_chatter(),
    ):
        # Shape inference and graph clean-up first, as onnxruntime recommends.
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(fp32_model, prepared)
        quantize_static(
            prepared,
            int8_model,
            _Batches(calibration, CALIBRATION_BATCH),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def onnx_logits(model: Path, images: np.ndarray) -> np.ndarray:
    """The graph's logits (N, classes) for preprocessed `images`, on the CPU."""
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    starts = range(0, len(images), INFERENCE_BATCH)
    batches = [
        session.run([ONNX_OUTPUT], {ONNX_INPUT: images[i : i + INFERENCE_BATCH]})[0] for i in starts
    ]
    return np.concatenate(batches) if batches else np.zeros((0, 0), np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def agreement(
    fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> Int8Agreement:
    """How int8's logits agree with fp32's on the same images of known classes."""
    same = fp32.argmax(axis=1) == int8.argmax(axis=1)
    present = sorted(set(labels.tolist()))
    return Int8Agreement(
        images=len(labels),
        top1=float(same.mean()),
        max_prob_diff=float(np.abs(softmax(fp32) - softmax(int8)).max()),
        per_class_top1={classes[index]: float(same[labels == index].mean()) for index in present},
    )
