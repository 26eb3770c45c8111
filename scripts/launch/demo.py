"""`make demo`: the main job end to end, locally and offline.

Trains the classifier with the real `train` command on DATA (train/valid[/test]
ImageFolders) or on a small generated two-class set, then serves the model and
classifies the test images over HTTP.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from launch.evaluation import job_files, print_evaluation
from launch.local import client, processes
from launch.synthetic_images import make_dataset
from model_artifact.config import read_config
from trainer.contract import TrainingPaths

# Random weights (ImageNet weights can't be had offline): a smoke test of the whole
# flow, not a transfer-learning result.
DEMO_HYPERPARAMETERS = {
    "pretrained": "false",
    "image_size": "64",
    "epochs": "6",
    "batch_size": "16",
    "lr": "0.0001",
}


def train_step(data: Path | None, work_dir: Path) -> Path:
    """Train locally; returns the model dir."""
    if data is None:
        data = make_dataset(work_dir / "data", per_class=24)
        print(f"generated a two-class data set in {data}")
    paths = TrainingPaths(work_dir / "job")
    exit_code = processes.train(data, paths.base, DEMO_HYPERPARAMETERS)
    if exit_code != 0:
        reason = paths.failure_file
        sys.exit(f"training failed: {reason.read_text() if reason.exists() else exit_code}")
    config = read_config(paths.model_dir)
    print(f"\nmodel:            {paths.model_dir} (classes {list(config.classes)})")
    print(f"metrics, curves:  {paths.output_data_dir}")
    print(f"final metrics:    {config.metrics}\n")
    print_evaluation(job_files(paths.output_data_dir))
    return paths.model_dir


SHOWN_PREDICTIONS = 6


def serve_step(model_dir: Path, test_dir: Path, work_dir: Path) -> int:
    """Serve the model with the real `serve`, classify test_dir over HTTP, stop the server."""
    images = sorted(path for path in test_dir.glob("*/*") if path.is_file())
    if not images:
        print(f"no test images under {test_dir}: nothing to classify")
        return 0
    port = processes.free_port()
    started = time.monotonic()
    log_path = work_dir / "serve.log"
    print(f"\nserving {model_dir} on port {port} (log: {log_path})")
    with log_path.open("wb") as log_file:
        server = processes.start_server(model_dir, work_dir / "serve", port, log_file=log_file)
    try:
        processes.wait_until_ready(port, server, log_path)
        print(f"server ready in {time.monotonic() - started:.1f} s")
        answers = [(path, *client.classify_file(port, path)) for path in images]
    finally:
        exit_code = processes.stop_server(server)
        print(f"server stopped (exit code {exit_code})")
    return report_predictions(answers)


def report_predictions(answers: list[tuple[Path, int, dict[str, Any]]]) -> int:
    """Print accuracy (the folder name is the true class) and a few predictions."""
    failed = [(path, status, answer) for path, status, answer in answers if status != 200]
    labels = {path: answer["predictions"][0] for path, status, answer in answers if status == 200}
    correct = sum(prediction["label"] == path.parent.name for path, prediction in labels.items())
    accuracy = correct / len(answers)
    print(f"\nclassified {len(answers)} test images over HTTP: accuracy {accuracy:.3f}")
    every = max(1, len(labels) // SHOWN_PREDICTIONS)  # spread over the classes' folders
    for path, prediction in list(labels.items())[::every][:SHOWN_PREDICTIONS]:
        print(
            f"  {path.parent.name}/{path.name:24} -> {prediction['label']:10} "
            f"(probability {prediction['probability']:.3f})"
        )
    for path, status, answer in failed:
        print(f"  {path}: HTTP {status} {answer.get('error', '')}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("build/demo"),
        help="where data, job dir and logs go (default: build/demo)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="train/valid[/test] ImageFolders (default: generate a small set)",
    )
    args = parser.parse_args(argv)
    model_dir = train_step(args.data, args.work_dir)
    data = args.data if args.data is not None else args.work_dir / "data"
    return serve_step(model_dir, data / "test", args.work_dir)


if __name__ == "__main__":
    sys.exit(main())
