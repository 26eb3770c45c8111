"""Run the containers' commands as plain processes, without Docker or AWS.

    python scripts/local.py train --data DIR --job-dir OUT [--hp key=value ...]

lays OUT out exactly like /opt/ml and runs the same `train` command the training
image runs, with SAGEMAKER_BASE_DIR=OUT. The other subcommands do the same for
serving and tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_CODE = REPO_ROOT / "container_train"
TRAINING_MODULE = "trainer.job:main"  # the training image sets the same SAGEMAKER_TRAINING_MODULE
CHANNELS = ("train", "valid", "test")
LOCAL_HOST = "algo-1"


def venv_command(name: str) -> str:
    """A console script installed next to this Python (e.g. `train`, `serve`)."""
    return str(Path(sys.executable).with_name(name))


def parse_hyperparameters(pairs: Sequence[str]) -> dict[str, str]:
    """`--hp key=value` pairs (local.py and cloud.py); SageMaker passes values as strings."""
    hyperparameters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--hp takes key=value, got {pair!r}")
        hyperparameters[key] = value
    return hyperparameters


def layout_job_dir(job_dir: Path, data_dir: Path, hyperparameters: dict[str, str]) -> None:
    """Write OUT/input/{config,data} as SageMaker does; keep checkpoints so a rerun resumes."""
    config_dir = job_dir / "input" / "config"
    data_root = job_dir / "input" / "data"
    for folder in (config_dir, data_root, job_dir / "model", job_dir / "output" / "data"):
        folder.mkdir(parents=True, exist_ok=True)
    channels = [name for name in CHANNELS if (data_dir / name).is_dir()]
    for name in channels:
        link = data_root / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((data_dir / name).resolve(), target_is_directory=True)
    input_config = {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
        for name in channels
    }
    resource_config = {
        "current_host": LOCAL_HOST,
        "hosts": [LOCAL_HOST],
        "network_interface_name": "lo",
    }
    # SageMaker passes every hyperparameter value as a string.
    written = {key: str(value) for key, value in hyperparameters.items()}
    (config_dir / "hyperparameters.json").write_text(json.dumps(written, indent=2))
    (config_dir / "inputdataconfig.json").write_text(json.dumps(input_config, indent=2))
    (config_dir / "resourceconfig.json").write_text(json.dumps(resource_config, indent=2))
    for stale in ("failure", "success"):
        (job_dir / "output" / stale).unlink(missing_ok=True)


def training_environment(job_dir: Path) -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(TRAIN_CODE), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(job_dir.resolve()),
        "SAGEMAKER_TRAINING_MODULE": TRAINING_MODULE,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
    }


def train(data: Path, job_dir: Path, hyperparameters: dict[str, str]) -> int:
    """Run one training job; its log streams to this terminal. Returns its exit code."""
    for required in ("train", "valid"):
        if not (data / required).is_dir():
            print(f"note: {data / required} is missing; the job will report it", file=sys.stderr)
    layout_job_dir(job_dir, data, hyperparameters)
    completed = subprocess.run(
        [venv_command("train")], check=False, env=training_environment(job_dir)
    )
    return completed.returncode


SERVE_COMMAND = REPO_ROOT / "container_serve" / "serve"  # the serving image runs it as `serve`
DEFAULT_SERVE_PORT = 8080
SERVE_READY_LINE = "ready on port"  # what `serve` logs once every worker has warmed up
FILE_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".npy": "application/x-npy",
    ".json": "application/json",
}


def free_port() -> int:
    """A free TCP port below 32767, the highest multi-model-server 1.1 accepts."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found between 20000 and 32000")


def layout_serving_dir(model_dir: Path, base_dir: Path) -> None:
    """BASE/model -> model_dir, as SageMaker unpacks model.tar.gz into /opt/ml/model."""
    base_dir.mkdir(parents=True, exist_ok=True)
    link = base_dir / "model"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(model_dir.resolve(), target_is_directory=True)


def serving_environment(base_dir: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base_dir.resolve()),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }


def start_server(
    model_dir: Path,
    base_dir: Path,
    port: int,
    env: dict[str, str] | None = None,
    log_file: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `serve` for model_dir in the background; its log goes to log_file or here."""
    layout_serving_dir(model_dir, base_dir)
    return subprocess.Popen(
        [sys.executable, str(SERVE_COMMAND)],
        env={**serving_environment(base_dir, port), **(env or {})},
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
    )


def ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until_ready(
    port: int, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 300
) -> None:
    """Poll /ping and the log until `serve` reports ready; raise if it exits or times out.

    /ping alone is not enough: multi-model-server answers 200 before the model has loaded.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"serve exited with code {process.returncode}:\n{log_tail(log_path)}"
            )
        if ping(port) and SERVE_READY_LINE in log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"serve was not ready within {timeout:.0f} s:\n{log_tail(log_path)}")


def log_tail(log_path: Path, lines: int = 30) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def stop_server(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, as SageMaker stops a container; SIGKILL only if `serve` overruns."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def post_invocation(
    port: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str]:
    """POST /invocations; returns (status, body, response content type), errors included."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        method="POST",
        headers={"Content-Type": content_type, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def classify_file(port: int, path: Path) -> tuple[int, dict[str, Any]]:
    """Send one file (type from its suffix); returns the status and the decoded JSON body."""
    content_type = FILE_CONTENT_TYPES.get(path.suffix.lower(), "application/x-image")
    status, body, _ = post_invocation(port, path.read_bytes(), content_type)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"error": body[:200].decode(errors="replace")}


def serve(model_dir: Path, port: int) -> int:
    """Run `serve` in the foreground until Ctrl-C or SIGTERM; returns its exit code."""
    with tempfile.TemporaryDirectory(prefix="local-serve-") as base_dir:
        process = start_server(model_dir, Path(base_dir), port)
        signal.signal(signal.SIGTERM, lambda signum, frame: process.terminate())
        try:
            return process.wait()
        except KeyboardInterrupt:  # the terminal sent SIGINT to `serve` as well
            return stop_server(process)


def invoke(port: int, files: Sequence[Path]) -> int:
    """Classify files with a running server and print one row per prediction."""
    print(f"{'file':40} {'status':>6}  {'label':12} {'probability':>11}  probabilities")
    failures = 0
    for path in files:
        status, answer = classify_file(port, path)
        if status != 200:
            failures += 1
            print(f"{path.name:40} {status:>6}  {answer.get('error', answer)}")
            continue
        for prediction in answer["predictions"]:
            scores = " ".join(f"{k}={v:.3f}" for k, v in prediction["probabilities"].items())
            print(
                f"{path.name:40} {status:>6}  {prediction['label']:12} "
                f"{prediction['probability']:>11.3f}  {scores}"
            )
    return 1 if failures else 0


def add_job_arguments(parser: argparse.ArgumentParser, job_dir_help: str, hp_help: str) -> None:
    """--data, --job-dir and --hp, shared by the train and tune subcommands."""
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with train/ and valid/ (and optional test/) ImageFolders",
    )
    parser.add_argument("--job-dir", type=Path, required=True, help=job_dir_help)
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help=hp_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="run the training job locally")
    add_job_arguments(
        train_parser,
        job_dir_help="folder laid out like /opt/ml; model/ holds the artifacts",
        hp_help="a hyperparameter, as SageMaker would pass it (repeatable)",
    )
    serve_parser = commands.add_parser("serve", help="run the serving job locally")
    serve_parser.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="the training job's model/ folder (model.pt, model_config.json)",
    )
    serve_parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_SERVE_PORT,
        help=f"port to serve on (default: {DEFAULT_SERVE_PORT})",
    )

    invoke_parser = commands.add_parser("invoke", help="classify image files with a local server")
    invoke_parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_SERVE_PORT,
        help=f"port of the server (default: {DEFAULT_SERVE_PORT})",
    )
    invoke_parser.add_argument(
        "files",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="images (.jpg, .png, other), .npy arrays or JSON instances",
    )
    add_tune_parser(commands)
    return parser


def add_tune_parser(commands: Any) -> None:
    # Tuning imports the training code's search space and metric regexes.
    if str(TRAIN_CODE) not in sys.path:
        sys.path.insert(0, str(TRAIN_CODE))
    from trainer.search_space import OBJECTIVES  # noqa: PLC0415

    tune_parser = commands.add_parser(
        "tune", help="local hyperparameter tuning over the SageMaker tuner's search space"
    )
    add_job_arguments(
        tune_parser,
        job_dir_help="where trials/, the shared feature_cache/ and the results go",
        hp_help="a fixed hyperparameter for every trial (repeatable)",
    )
    tune_parser.add_argument(
        "--trials", type=int, default=8, help="training jobs to run (default: 8)"
    )
    tune_parser.add_argument(
        "--parallel", type=int, default=1, help="jobs at once (default: 1; each job uses all cores)"
    )
    tune_parser.add_argument(
        "--objective",
        choices=sorted(OBJECTIVES),
        default="valid_accuracy",
        help="what to optimise (default: valid_accuracy)",
    )
    tune_parser.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        hyperparameters = parse_hyperparameters(getattr(args, "hp", []))
    except ValueError as error:
        parser.error(str(error))
    if args.command == "train":
        return train(args.data, args.job_dir, hyperparameters)
    if args.command == "serve":
        return serve(args.model_dir, args.port)
    if args.command == "invoke":
        return invoke(args.port, args.files)
    if args.command == "tune":
        from tuning import tune  # noqa: PLC0415 - imports optuna and the training code

        return tune(
            args.data,
            args.job_dir,
            args.trials,
            args.parallel,
            args.objective,
            hyperparameters,
            args.seed,
        )
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
