"""`export-onnx`: the ONNX graphs for a model directory trained before (or with onnx=off).

    export-onnx --model-dir DIR [--data DIR]

The training image has it (`docker run ... IMAGE export-onnx --model-dir ...`), and
`scripts/local.py export` calls the same function. It writes what the training job
writes: `model.onnx` and `model.int8.onnx` beside `model.pt`, and the config's `onnx`
section. The int8 graph needs images, train ones to calibrate on and valid ones to
measure its agreement with fp32 on: without --data only the fp32 graph is written,
checked on random inputs, and the output says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from model_artifact.config import ArtifactError, ModelConfig, read_config
from trainer.contract import REQUIRED_CHANNELS
from trainer.data import Channel, scan_channel
from trainer.errors import ClientError
from trainer.onnx_export import describe, export_onnx


def read_channels(data: Path, classes: Sequence[str]) -> dict[str, Channel]:
    """DATA's train/ and valid/ ImageFolders, labelled with the model's classes."""
    for name in REQUIRED_CHANNELS:
        folders = (
            {p.name for p in (data / name).glob("[!.]*/")} if (data / name).is_dir() else set()
        )
        unknown = sorted(folders - set(classes))
        if unknown:
            raise ClientError(
                f"channel {name!r} has classes the model lacks: {', '.join(unknown)} "
                f"(the model's: {', '.join(classes)})"
            )
    return {name: scan_channel(name, data / name, classes) for name in REQUIRED_CHANNELS}


def export_model_dir(model_dir: Path, data: Path | None) -> ModelConfig:
    """Write the ONNX graphs of `model_dir` (int8 too when `data` is given); the new config."""
    config = read_config(model_dir)
    channels = None if data is None else read_channels(data, config.classes)
    return export_onnx(model_dir, config, channels)


def run(model_dir: Path, data: Path | None) -> int:
    """export_model_dir, its result or its one-line reason printed; the exit code."""
    try:
        written = export_model_dir(model_dir, data)
    except (ArtifactError, ClientError, OSError) as error:
        print(f"export-onnx: {error}", file=sys.stderr)
        return 1
    assert written.onnx is not None
    print(f"{model_dir}: {describe(written.onnx)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export-onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="a training job's model/ folder (model.pt, model_config.json)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="folder with train/ and valid/ ImageFolders: the int8 graph is calibrated and "
        "checked on them (default: none, fp32 only)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.model_dir, args.data)
