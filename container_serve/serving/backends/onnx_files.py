"""Which ONNX graph a model directory serves, and why: torch- and onnxruntime-free, so that
`serve` decides before it starts the model server and a worker decides the same.

`auto` serves the int8 graph only when the training job measured it agreeing with the fp32
graph at least SERVING_INT8_MIN_AGREEMENT, overall and in its worst class: a badly
quantized network can keep its overall agreement while one class collapses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_artifact import precision
from model_artifact.config import ONNX_FILE, ArtifactError, ModelConfig
from serving import contract
from serving.errors import ServeConfigError

# What writes the ONNX graphs of a model trained before they existed.
EXPORT_COMMAND = (
    "scripts/local.py export --model-dir DIR "
    "(or `export-onnx --model-dir DIR` in the training image)"
)


@dataclass(frozen=True)
class OnnxChoice:
    path: Path
    precision: str  # fp32 or int8
    reason: str  # why, for the log


def choose(config: ModelConfig, model_dir: Path, choice: str, min_agreement: float) -> OnnxChoice:
    """The graph to serve for SERVING_PRECISION `choice` (auto, fp32 or int8)."""
    fp32 = fp32_path(config, model_dir)
    if choice == "fp32":
        return OnnxChoice(fp32, "fp32", f"{contract.PRECISION_ENV}=fp32")
    int8 = config.onnx.int8 if config.onnx is not None else None
    missing = None
    if int8 is None:
        missing = "the model has no int8 graph"
    elif not (model_dir / int8.file).is_file():
        missing = f"its int8 graph {model_dir / int8.file} is missing"
    if choice == contract.INT8:
        if missing is not None:
            raise ServeConfigError(
                f"{contract.PRECISION_ENV}=int8, but {missing}: write it with {EXPORT_COMMAND}"
            )
        assert int8 is not None
        return OnnxChoice(model_dir / int8.file, "int8", f"{contract.PRECISION_ENV}=int8")
    if choice != precision.AUTO:
        raise ServeConfigError(f"the onnx backend serves fp32 or int8, not {choice}")
    if missing is not None or int8 is None:
        return OnnxChoice(fp32, "fp32", f"auto: {missing}")
    agreement = int8.agreement
    measured = (
        f"int8 agrees with fp32 on {agreement.top1:.4f} of {agreement.images} images, "
        f"{agreement.worst_class_top1:.4f} in its worst class"
    )
    if min(agreement.top1, agreement.worst_class_top1) >= min_agreement:
        return OnnxChoice(
            model_dir / int8.file,
            "int8",
            f"auto: {measured} (>= {contract.INT8_MIN_AGREEMENT_ENV}={min_agreement})",
        )
    return OnnxChoice(
        fp32, "fp32", f"auto: {measured}, below {contract.INT8_MIN_AGREEMENT_ENV}={min_agreement}"
    )


def fp32_path(config: ModelConfig, model_dir: Path) -> Path:
    """model.onnx, or an ArtifactError that names the command that writes it."""
    path = model_dir / (config.onnx.file if config.onnx is not None else ONNX_FILE)
    if config.onnx is None or not path.is_file():
        raise ArtifactError(
            f"{path} is missing: this server runs ONNX Runtime (the CPU image has no torch); "
            f"write the ONNX graphs with {EXPORT_COMMAND}"
        )
    return path
