"""ONNX Runtime on the CPU: `model.onnx` or `model.int8.onnx` (serving.backends.onnx_files
says which), fed by the eval transform in Pillow and numpy: no torch anywhere.

The session is made in the worker, after multi-model-server's fork (a session's thread
pool does not survive one), with the worker's share of the cores: ONNX Runtime sizes its
pool to the host's cores and ignores OMP_NUM_THREADS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from PIL import Image

from model_artifact.config import ONNX_INPUT, ONNX_OUTPUT, ArtifactError, ModelConfig
from model_artifact.preprocessing import array_transform
from serving import contract
from serving.backends import onnx_files
from serving.errors import first_line

logger = logging.getLogger(__name__)

# What a session raises on a file that is no model, or on a graph it cannot run.
LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoSuchFile,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)
RUN_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.RuntimeException,
    ort_errors.EPFail,
)


@dataclass(frozen=True)
class OnnxRunner:
    session: ort.InferenceSession
    transform: Callable[[Image.Image], np.ndarray]
    precision: str
    threads: int
    place: str = "cpu"

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        batch = np.stack([self.transform(image) for image in images])
        try:
            (logits,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})
        except RUN_ERRORS as error:
            raise RuntimeError(first_line(error)) from None
        return np.asarray(logits, dtype=np.float32)


def load_runner(model_dir: Path, config: ModelConfig, choice: str, context: Any) -> OnnxRunner:
    chosen = onnx_files.choose(config, model_dir, choice, contract.int8_min_agreement())
    logger.info("serving %s in %s: %s", chosen.path.name, chosen.precision, chosen.reason)
    threads = contract.worker_threads()
    session = open_session(chosen.path, threads)
    check_input(session, chosen.path, config)
    return OnnxRunner(session, array_transform(config.preprocessing), chosen.precision, threads)


def open_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one graph at a time: the batch is the parallelism
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except LOAD_ERRORS as error:
        raise ArtifactError(f"{path.name} is not an ONNX model: {first_line(error)}") from None


def check_input(session: ort.InferenceSession, path: Path, config: ModelConfig) -> None:
    """The graph takes (N, 3, S, S) `images`, S from model_config.json's preprocessing."""
    inputs = {tensor.name: tensor.shape for tensor in session.get_inputs()}
    size = config.preprocessing.image_size
    expected = ["batch", 3, size, size]
    shape = inputs.get(ONNX_INPUT)
    # Named (symbolic) dimensions take any size; the batch dimension must be one.
    if (
        shape is None
        or len(shape) != len(expected)
        or any(
            isinstance(dim, int) and dim != want
            for dim, want in zip(shape[1:], expected[1:], strict=True)
        )
    ):
        raise ArtifactError(
            f"{path.name} takes {inputs}, but model_config.json's preprocessing makes "
            f"{ONNX_INPUT} of shape {expected}"
        )
