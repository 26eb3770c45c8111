"""Serving speed: POST /invocations latency and throughput against the raw model forward.

    python bench/serve_speed.py [--model-dir DIR] [--image FILE] [--runs 3] [--workers 1 2]

Starts the real `serve` (as `scripts/local.py serve` does) on one model and sends one
500x375 JPEG again and again from 1 and from 4 concurrent clients (keep-alive
connections). In the same run, in the same process, it times the raw TorchScript forward
of one preprocessed image, and decode + preprocess + forward, so the table shows what
the HTTP and multi-model-server layers add. Every number is the median over --runs runs.
Without --model-dir it trains a model with the real `train` (pretrained off, 224 px,
one epoch on generated images): speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from launch.local import processes
from launch.synthetic_images import make_dataset
from model_artifact.config import read_config
from model_artifact.preprocessing import eval_transform, open_rgb
from model_artifact.torchscript import load_model
from trainer.contract import TrainingPaths

IMAGE_SIZE = (500, 375)  # the classic cats-vs-dogs photo size


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p99_ms: float
    throughput: float  # images per second


def photo_like_jpeg(size: tuple[int, int] = IMAGE_SIZE) -> bytes:
    """A JPEG with photo-like entropy (smooth gradients plus noise), so decoding costs what
    a real photo costs."""
    rng = np.random.default_rng(0)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], -1)
    pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def train_bench_model(work_dir: Path) -> Path:
    data = make_dataset(work_dir / "data", per_class=4)
    hyperparameters = {"pretrained": "false", "image_size": "224", "epochs": "1"}
    if processes.train(data, work_dir / "job", hyperparameters) != 0:
        raise SystemExit("training the benchmark model failed")
    return TrainingPaths(work_dir / "job").model_dir


def percentiles(seconds: Sequence[float], wall_s: float) -> Timing:
    milliseconds = np.array(seconds) * 1000
    return Timing(
        float(np.percentile(milliseconds, 50)),
        float(np.percentile(milliseconds, 99)),
        len(seconds) / wall_s,
    )


def time_calls(call: Callable[[], object], count: int) -> Timing:
    durations = []
    started = time.perf_counter()
    for _ in range(count):
        begin = time.perf_counter()
        call()
        durations.append(time.perf_counter() - begin)
    return percentiles(durations, time.perf_counter() - started)


def in_process_calls(model_dir: Path, jpeg: bytes) -> dict[str, Callable[[], object]]:
    """The same artifact and preprocessing without HTTP: the floor the server adds to."""
    config = read_config(model_dir)
    transform = eval_transform(config.preprocessing)
    network = load_model(model_dir, config)
    batch = transform(open_rgb(jpeg))[None]

    def forward() -> None:
        with torch.inference_mode():
            network(batch)

    def end_to_end() -> None:
        with torch.inference_mode():
            network(transform(open_rgb(jpeg))[None])

    for _ in range(5):  # TorchScript optimises during its first calls
        end_to_end()
    return {"forward": forward, "in_process": end_to_end}


def http_timing(port: int, jpeg: bytes, clients: int, per_client: int) -> Timing:
    """`clients` threads, each with its own keep-alive connection, POST the image."""
    durations: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for _ in range(per_client):
            begin = time.perf_counter()
            connection.request("POST", "/invocations", jpeg, {"Content-Type": "image/jpeg"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - begin)
            if response.status != 200:
                errors.append(f"HTTP {response.status}")
        connection.close()
        with lock:
            durations.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return percentiles(durations, wall_s)


def median_timing(timings: Sequence[Timing]) -> Timing:
    return Timing(
        statistics.median(t.p50_ms for t in timings),
        statistics.median(t.p99_ms for t in timings),
        statistics.median(t.throughput for t in timings),
    )


def bench_setup(
    model_dir: Path,
    work_dir: Path,
    jpeg: bytes,
    workers: int,
    threads: int,
    args: argparse.Namespace,
) -> dict[str, Timing]:
    """One server setup. Each run measures in-process and over HTTP back to back, so that
    both see the same load on a shared machine; medians over the runs."""
    torch.set_num_threads(threads)  # what `serve` gives each worker
    calls = in_process_calls(model_dir, jpeg)
    port = processes.free_port()
    log_path = args.work_dir / f"serve-{workers}w.log"
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)}
    with log_path.open("wb") as log_file:
        server = processes.start_server(model_dir, args.work_dir / "serve", port, env, log_file)
    runs: dict[str, list[Timing]] = {"forward": [], "in_process": [], "1": [], "4": []}
    try:
        processes.wait_until_ready(port, server, log_path)
        http_timing(port, jpeg, clients=workers, per_client=10)  # warm up every worker
        for _ in range(args.runs):
            for name, call in calls.items():
                runs[name].append(time_calls(call, args.requests))
            for clients in (1, 4):
                timing = http_timing(port, jpeg, clients, max(1, args.requests // clients))
                runs[str(clients)].append(timing)
    finally:
        processes.stop_server(server)
    return {name: median_timing(timings) for name, timings in runs.items()}


def row(name: str, clients: str, timing: Timing, forward_p50: float) -> str:
    return (
        f"| {name} | {clients} | {timing.p50_ms:.1f} | {timing.p99_ms:.1f} | "
        f"{timing.throughput:.1f} | {timing.p50_ms / forward_p50:.2f} |"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model-dir", type=Path, help="a training job's model/ (default: train one)")
    add("--image", type=Path, help="a JPEG to send (default: a generated 500x375 one)")
    add("--work-dir", type=Path, default=Path("build/bench-serve"), help="logs, trained model")
    add("--runs", type=int, default=3, help="runs per measurement (default: 3)")
    add("--requests", type=int, default=40, help="requests per run (default: 40)")
    add("--workers", type=int, nargs="+", default=[1], help="worker counts (default: 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or train_bench_model(args.work_dir)
    jpeg = args.image.read_bytes() if args.image else photo_like_jpeg()
    cores = len(os.sched_getaffinity(0))
    image_size = read_config(model_dir).preprocessing.image_size
    print(
        f"model {model_dir}, input {image_size} px; {len(jpeg):,} byte JPEG "
        f"{Image.open(io.BytesIO(jpeg)).size}; {cores} cores; load average "
        f"{os.getloadavg()[0]:.1f}; medians of {args.runs} runs\n"
    )
    lines = []
    for workers in args.workers:
        lines += measure(model_dir, jpeg, workers, max(1, cores // workers), args)
    print("| measurement | clients | p50 ms | p99 ms | images/s | p50 / raw forward |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))
    return 0


def measure(
    model_dir: Path, jpeg: bytes, workers: int, threads: int, args: argparse.Namespace
) -> list[str]:
    """Table rows for one server setup."""
    timings = bench_setup(model_dir, args.work_dir, jpeg, workers, threads, args)
    forward_p50 = timings["forward"].p50_ms
    setup = f"{workers} worker(s) x {threads} thread(s)"
    return [
        row(
            f"raw model forward, in-process, {threads} thread(s)",
            "-",
            timings["forward"],
            forward_p50,
        ),
        row("decode + preprocess + forward, in-process", "-", timings["in_process"], forward_p50),
        row(f"POST /invocations, {setup}", "1", timings["1"], forward_p50),
        row(f"POST /invocations, {setup}", "4", timings["4"], forward_p50),
    ]


if __name__ == "__main__":
    sys.exit(main())
