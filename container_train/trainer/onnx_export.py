"""The model directory's ONNX graphs, for CPU runtimes: `model.onnx` (fp32) and
`model.int8.onnx`, and the config's `onnx` section that describes them.

Both are made from `model.pt`, not from the network in memory, so that the training job
and `export-onnx` (for a model directory trained before) run the same code on the same
input. The fp32 graph is checked against the TorchScript network on real images and the
largest logit difference recorded. The int8 graph is calibrated on a bounded sample of
train images; its agreement with fp32 on a bounded sample of valid images is recorded,
and serving decides from it whether int8 may answer (trainer/quantization.py).

torch.onnx's TorchScript-based exporter (`dynamo=False`) takes the TorchScript module as
it is; the torch.export-based one would need onnxscript. torch 2.14 marks it deprecated;
that warning is expected and silenced here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from model_artifact.config import (
    ONNX_FILE,
    ONNX_INPUT,
    ONNX_INT8_FILE,
    ONNX_OUTPUT,
    ModelConfig,
    OnnxExport,
    OnnxInt8,
    write_config,
)
from model_artifact.torchscript import load_model
from trainer.data import Channel
from trainer.quantization import agreement, onnx_logits, quantize_int8
from trainer.samples import sample_images
from trainer.storage import atomic_write

log = logging.getLogger(__name__)

OPSET = 17
# Bounded so that the step costs the same whatever the data set's size, at most 10% of a
# job on a thousand images (docs/training.md has the measurement). Calibrating one image
# costs about 2.5 times what running it does (the calibration session is unoptimised).
CALIBRATION_IMAGES = 16  # train images
AGREEMENT_IMAGES = 32  # valid images, run in fp32 and in int8
CHECK_IMAGES = 4  # of the agreement images, also run through the TorchScript network


@contextlib.contextmanager
def _legacy_exporter_is_intended() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript")
        warnings.filterwarnings("ignore", message=r"no signature found for")
        yield


def export_graph(network: torch.jit.ScriptModule, image_size: int, path: Path) -> None:
    """`network` as an fp32 ONNX graph: input (N, 3, S, S), output logits, N dynamic."""
    example = torch.zeros(1, 3, image_size, image_size)
    batch = {0: "batch"}
    with _legacy_exporter_is_intended(), torch.no_grad():
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: batch, ONNX_OUTPUT: batch},
        )


def torchscript_logits(network: torch.jit.ScriptModule, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network(torch.from_numpy(images)).numpy()


def max_abs_diff(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first - second).max())


def export_onnx(
    model_dir: Path, config: ModelConfig, channels: Mapping[str, Channel] | None = None
) -> ModelConfig:
    """Write `model.onnx`, and `model.int8.onnx` when `channels` has `train` and `valid`,
    beside `model.pt`; then the config with its `onnx` section, which is returned."""
    started = time.monotonic()
    # Until the graphs are written and checked, the config names none of them: a job or a
    # command that stops half-way leaves a model directory that serves model.pt.
    write_config(model_dir, dataclasses.replace(config, onnx=None))
    (model_dir / ONNX_INT8_FILE).unlink(missing_ok=True)
    network = load_model(model_dir, config)
    size = config.preprocessing.image_size
    atomic_write(model_dir / ONNX_FILE, lambda partial: export_graph(network, size, partial))
    if channels is None:
        onnx = _checked(model_dir, network, size)
    else:
        onnx = _quantized(model_dir, config, network, channels)
    written = dataclasses.replace(config, onnx=onnx)
    write_config(model_dir, written)
    log.info("%s in %.1f s", describe(onnx), time.monotonic() - started)
    return written


def export_onnx_after_training(
    model_dir: Path, config: ModelConfig, channels: Mapping[str, Channel]
) -> ModelConfig:
    """The training job's ONNX step: `export_onnx`, except that a failure is logged and
    the job goes on. The trained model.pt must not be lost to it: SageMaker keeps the
    model directory of a successful job only, and export-onnx can add the graphs later."""
    try:
        return export_onnx(model_dir, config, channels)
    except Exception:
        log.exception("no ONNX graphs (model.pt is unaffected; export-onnx can retry)")
        return dataclasses.replace(config, onnx=None)


def _checked(model_dir: Path, network: torch.jit.ScriptModule, size: int) -> OnnxExport:
    """The fp32 graph alone, checked on seeded random inputs (no images at hand)."""
    seeded = torch.Generator().manual_seed(0)
    probe = torch.randn(CHECK_IMAGES, 3, size, size, generator=seeded).numpy()
    difference = max_abs_diff(
        torchscript_logits(network, probe), onnx_logits(model_dir / ONNX_FILE, probe)
    )
    return OnnxExport(ONNX_FILE, difference)


def _quantized(
    model_dir: Path,
    config: ModelConfig,
    network: torch.jit.ScriptModule,
    channels: Mapping[str, Channel],
) -> OnnxExport:
    """The fp32 graph checked on valid images, and the int8 graph with its agreement."""
    calibration = sample_images(channels["train"], CALIBRATION_IMAGES, config.preprocessing)
    held_out = sample_images(channels["valid"], AGREEMENT_IMAGES, config.preprocessing)
    fp32_path, int8_path = model_dir / ONNX_FILE, model_dir / ONNX_INT8_FILE
    fp32 = onnx_logits(fp32_path, held_out.images)
    checked = held_out.images[:CHECK_IMAGES]
    difference = max_abs_diff(torchscript_logits(network, checked), fp32[:CHECK_IMAGES])
    atomic_write(int8_path, lambda partial: quantize_int8(fp32_path, partial, calibration.images))
    int8 = onnx_logits(int8_path, held_out.images)
    measured = agreement(fp32, int8, held_out.labels, config.classes)
    return OnnxExport(ONNX_FILE, difference, OnnxInt8(ONNX_INT8_FILE, len(calibration), measured))


def describe(onnx: OnnxExport) -> str:
    """One line on what was written and how it compares."""
    fp32 = f"{onnx.file} (check: max abs diff {onnx.check_max_abs_diff:.2e})"
    if onnx.int8 is None:
        return f"{fp32}; no int8 graph (it needs train and valid images to calibrate and check)"
    measured = onnx.int8.agreement
    per_class = ", ".join(f"{name} {share:.3f}" for name, share in measured.per_class_top1.items())
    return (
        f"{fp32}, {onnx.int8.file} (calibrated on {onnx.int8.calibration_images} train "
        f"images; on {measured.images} valid images: top-1 agreement {measured.top1:.3f} "
        f"({per_class}), max probability diff {measured.max_prob_diff:.4f})"
    )
