"""ONNX graphs for a model directory, as the training job writes them: `model.onnx` exported
from its `model.pt`, `model.int8.onnx` statically quantized (QDQ, per-channel weights) on
a few images, and the `onnx` section of model_config.json with the measured agreement."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime import quantization
from PIL import Image

from model_artifact.config import (
    ONNX_FILE,
    ONNX_INPUT,
    ONNX_INT8_FILE,
    ONNX_OUTPUT,
    Int8Agreement,
    ModelConfig,
    OnnxExport,
    OnnxInt8,
    read_config,
    write_config,
)
from model_artifact.preprocessing import array_transform
from model_artifact.torchscript import load_model


def export_fp32(model_dir: Path, config: ModelConfig, path: Path) -> None:
    network = load_model(model_dir, config)
    size = config.preprocessing.image_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            network,
            (torch.zeros(1, 3, size, size),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
        )


class Batches(quantization.CalibrationDataReader):
    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {ONNX_INPUT: batch}


def quantize_int8(fp32: Path, int8: Path, batches: Sequence[np.ndarray]) -> None:
    quantization.quantize_static(
        str(fp32),
        str(int8),
        Batches(batches),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
    )


def probabilities(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def agreement(fp32: Path, int8: Path, batch: np.ndarray, classes: Sequence[str]) -> Int8Agreement:
    """Top-1 agreement overall and per class (the class fp32 predicts), the largest
    probability difference."""
    full, reduced = probabilities(fp32, batch), probabilities(int8, batch)
    same = full.argmax(axis=1) == reduced.argmax(axis=1)
    per_class = {
        name: float(same[full.argmax(axis=1) == index].mean())
        for index, name in enumerate(classes)
        if (full.argmax(axis=1) == index).any()
    }
    return Int8Agreement(
        images=len(batch),
        top1=float(same.mean()),
        max_prob_diff=float(np.abs(full - reduced).max()),
        per_class_top1=per_class,
    )


def add_onnx(model_dir: Path, images: Sequence[Image.Image], int8: bool = True) -> ModelConfig:
    """Write the ONNX graphs into model_dir (int8 calibrated and checked on `images`)."""
    config = read_config(model_dir)
    transform = array_transform(config.preprocessing)
    batch = np.stack([transform(image.convert("RGB")) for image in images])
    export_fp32(model_dir, config, model_dir / ONNX_FILE)
    int8_section = None
    if int8:
        quantize_int8(model_dir / ONNX_FILE, model_dir / ONNX_INT8_FILE, [batch])
        int8_section = OnnxInt8(
            file=ONNX_INT8_FILE,
            calibration_images=len(images),
            agreement=agreement(
                model_dir / ONNX_FILE, model_dir / ONNX_INT8_FILE, batch, config.classes
            ),
        )
    written = dataclasses.replace(config, onnx=OnnxExport(ONNX_FILE, 0.0, int8_section))
    write_config(model_dir, written)
    return written


def with_agreement(model_dir: Path, top1: float, worst_class_top1: float) -> ModelConfig:
    """model_dir's config, its int8 agreement replaced (for the int8 gate's tests)."""
    config = read_config(model_dir)
    assert config.onnx is not None and config.onnx.int8 is not None
    measured = dataclasses.replace(
        config.onnx.int8.agreement,
        top1=top1,
        per_class_top1={"cat": worst_class_top1, "dog": max(top1, worst_class_top1)},
    )
    int8 = dataclasses.replace(config.onnx.int8, agreement=measured)
    written = dataclasses.replace(config, onnx=dataclasses.replace(config.onnx, int8=int8))
    write_config(model_dir, written)
    return written
