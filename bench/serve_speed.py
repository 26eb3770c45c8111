"""Serving speed: latency and throughput with batching off and on, in fp32 and in the `auto`
precision, against the raw model forward; the precision's agreement with fp32; start-up.

    python bench/serve_speed.py [--model-dir DIR] [--data PHOTOS] [--runs 3] [--clients 1 4 16]
                                [--precisions fp32 auto] [--delays MS ...]
    python bench/serve_speed.py --startup-only [--baseline-tree CHECKOUT] [--runs 5]

Starts the real `serve` (as `scripts/local.py serve` does) once per setup and run, and sends
one 500x375 JPEG again and again from 1, 4 and 16 concurrent keep-alive clients. In the same
run, in this process, it times the raw forward of the same artifact, prepared as a worker
prepares it (device, precision, channels_last), at batch 1 and at the server's batch size:
every HTTP row is compared with the raw forward at the batch size the server would use.
Every number is the median over --runs runs; setups alternate within a run, so that they see
the same load on a shared machine. Also prints:

- the precision table: top-1 agreement of `auto` (and of a forced bf16 where `auto` is fp32)
  with fp32 on the photos of --data (default: generated images), the largest probability
  difference, and the raw-forward speed-up; a precision the device lacks says "emulated";
- the start-up phases as `serve` logs them, with the start-up optimisations (JVM flags,
  class archive, preloaded torch) on, and off in the same run, and with --baseline-tree the
  phases of the `serve` of another checkout of this repository (an earlier version).

Runs unchanged on a GPU machine: the server then uses one worker per GPU and its GPU batch
size, and the raw forward runs on the first GPU. Without --model-dir it trains a model with
the real `train` (pretrained off, 224 px, one epoch on the photos, or on generated images
where there are none) and keeps it in --work-dir for the next run: speed does not depend on
the weights, the precision agreement is only meaningful for a model of real photos.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import photos
import torch
from PIL import Image

from launch.local import processes
from launch.local.jobdir import layout_serving_dir
from launch.synthetic_images import make_dataset
from model_artifact import precision
from model_artifact.config import read_config
from model_artifact.preprocessing import open_rgb
from serving import contract, handler
from trainer.contract import TrainingPaths

IMAGE_SIZE = (500, 375)  # the classic cats-vs-dogs photo size


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p99_ms: float
    throughput: float  # images per second


@dataclass(frozen=True)
class Setup:
    """One server configuration: batching on (with a delay, or the default) or off, in one
    precision."""

    batching: bool
    precision: str  # what SERVING_PRECISION is set to
    delay_ms: int | None = None  # None: serve's default

    @property
    def name(self) -> str:
        if not self.batching:
            return f"batching off, {self.precision}"
        delay = "" if self.delay_ms is None else f" ({self.delay_ms} ms)"
        return f"batching on{delay}, {self.precision}"

    @property
    def log_name(self) -> str:
        return self.name.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")

    def env(self, batch_size: int) -> dict[str, str]:
        env = {
            contract.BATCH_SIZE_ENV: str(batch_size if self.batching else 1),
            contract.PRECISION_ENV: self.precision,
        }
        if self.delay_ms is not None:
            env[contract.MAX_BATCH_DELAY_ENV] = str(self.delay_ms)
        return env


# --------------------------------------------------------------------------------- inputs


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


def train_bench_model(work_dir: Path, data: Path) -> Path:
    """A 224-px model (pretrained off, one epoch) on the photos where there are some, else on
    generated images; a model this folder already holds is used again."""
    model_dir = TrainingPaths(work_dir / "job").model_dir
    if (model_dir / "model_config.json").is_file():
        print(f"using the model trained earlier in {model_dir}", file=sys.stderr)
        return model_dir
    if (data / "train").is_dir() and (data / "valid").is_dir():
        channels = data  # real photos make the precision agreement meaningful
    else:
        channels = make_dataset(work_dir / "data", per_class=4)
    hyperparameters = {"pretrained": "false", "image_size": "224", "epochs": "1"}
    if processes.train(channels, work_dir / "job", hyperparameters) != 0:
        raise SystemExit("training the benchmark model failed")
    return model_dir


def agreement_images(data: Path, work_dir: Path, limit: int) -> tuple[list[Path], str]:
    """The photos of data/test, else (no photo set here) generated images."""
    if (data / "test").is_dir():
        root = data / "test"
        images = sorted(path for path in root.rglob("*") if path.suffix.lower() in (".jpg", ".png"))
        return images[:limit], f"{min(limit, len(images))} photos of {root}"
    generated = make_dataset(work_dir / "agreement", per_class=limit // 2)
    return sorted((generated / "test").rglob("*.jpg")), "generated images"


# ------------------------------------------------------------------------------- timings


def percentiles(seconds: Sequence[float], wall_s: float, images_per_call: int = 1) -> Timing:
    milliseconds = np.array(seconds) * 1000
    return Timing(
        float(np.percentile(milliseconds, 50)),
        float(np.percentile(milliseconds, 99)),
        len(seconds) * images_per_call / wall_s,
    )


def median_timing(timings: Sequence[Timing]) -> Timing:
    return Timing(
        statistics.median(t.p50_ms for t in timings),
        statistics.median(t.p99_ms for t in timings),
        statistics.median(t.throughput for t in timings),
    )


def bench_device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def time_forward(model: handler.LoadedModel, batch_size: int, count: int) -> Timing:
    """The raw network on a preprocessed batch already in place: the floor of serving."""
    size = model.preprocessing.image_size
    batch = torch.randn(batch_size, 3, size, size).to(
        model.device, dtype=model.input_dtype, memory_format=torch.channels_last
    )
    synchronize = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    durations = []
    with torch.inference_mode():
        for _ in range(3):  # warm up this batch size
            model.network(batch)
        synchronize()
        started = time.perf_counter()
        for _ in range(count):
            begin = time.perf_counter()
            model.network(batch)
            synchronize()
            durations.append(time.perf_counter() - begin)
    return percentiles(durations, time.perf_counter() - started, batch_size)


def http_timing(port: int, jpeg: bytes, clients: int, per_client: int) -> Timing:
    """`clients` threads, each with its own keep-alive connection, POST the image."""
    durations: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
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


# ------------------------------------------------------------------------------ start-up

_PHASE = re.compile(r"\[serve\] (?P<phase>[^:]+(?::[^:]+)?): (?P<seconds>[0-9.]+) s$")
_READY = re.compile(r"\[serve\] ready on port \d+ in (?P<seconds>[0-9.]+) s")


def startup_phases(log: str, wall_s: float) -> dict[str, float]:
    """Phase -> seconds as `serve` logs them (workers' steps by step, pid dropped), plus the
    wall time from process start to the ready line as this process saw it."""
    phases: dict[str, float] = {}
    for line in log.splitlines():
        match = _PHASE.search(line)
        if match:
            phase = re.sub(r"^worker \d+: ", "worker: ", match["phase"])
            phases.setdefault(phase, float(match["seconds"]))
    phases["process start to ready (wall)"] = wall_s
    return phases


def start_server(
    model_dir: Path,
    work_dir: Path,
    env: dict[str, str],
    log_name: str,
    source_tree: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int, dict[str, float]]:
    """`serve` on a free port, waited for; returns the process, its port, its phases. With
    `source_tree`, the `serve` of that checkout of this repository runs instead (its
    packages first on the import path, this environment's dependencies)."""
    port = processes.free_port()
    log_path = work_dir / f"{log_name}.log"
    started = time.perf_counter()
    with log_path.open("wb") as log_file:
        if source_tree is None:
            server = processes.start_server(model_dir, work_dir / "serve", port, env, log_file)
        else:
            server = start_other_serve(source_tree, model_dir, work_dir, port, env, log_file)
    deadline = time.monotonic() + 600
    while "ready on port" not in log_path.read_text(errors="replace"):
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"serve did not start{processes.tail(log_path)}")
        time.sleep(0.02)
    wall_s = time.perf_counter() - started
    return server, port, startup_phases(log_path.read_text(errors="replace"), wall_s)


def start_other_serve(
    tree: Path, model_dir: Path, work_dir: Path, port: int, env: dict[str, str], log: IO[bytes]
) -> subprocess.Popen[bytes]:
    layout_serving_dir(model_dir, work_dir / "serve")
    path = os.pathsep.join(
        str(tree.resolve() / folder) for folder in ("container_serve", "artifact")
    )
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from serving.server import main; sys.exit(main())"],
        env={**processes.serving_environment(work_dir / "serve", port), "PYTHONPATH": path, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


# ----------------------------------------------------------------------------- one run


STARTUP_VARIANTS = {
    "this serve": {},
    "JVM defaults, no class archive, no preload": {
        contract.MODEL_SERVER_VMARGS_ENV: "-Xshare:auto",
        contract.PRELOAD_ENV: "false",
    },
}


def compare_batching(
    model_dir: Path,
    jpeg: bytes,
    model: handler.LoadedModel,
    choice: str,
    batch_size: int,
    args: argparse.Namespace,
) -> tuple[dict[Setup, dict[int, list[Timing]]], dict[int, list[Timing]]]:
    """Batching off and on (with each of --delays), every server up, measured in turn in
    every round (with the raw forward at batch 1 and at the server's batch size in the same
    rounds), so that each ratio compares measurements taken under the same load."""
    delays = args.delays or [None]
    setups = [Setup(False, choice), *(Setup(True, choice, delay) for delay in delays)]
    running = {
        setup: start_server(model_dir, args.work_dir, setup.env(batch_size), setup.log_name)
        for setup in setups
    }
    http: dict[Setup, dict[int, list[Timing]]] = {s: {c: [] for c in args.clients} for s in setups}
    raw: dict[int, list[Timing]] = {size: [] for size in sorted({1, batch_size})}
    try:
        for server, port, _ in running.values():
            processes.wait_until_ready(port, server)
            for clients in args.clients:  # every batch size and connection once, untimed
                http_timing(port, jpeg, clients, 2)
        for _ in range(args.runs):
            for size, timings in raw.items():
                timings.append(time_forward(model, size, max(5, 40 // size)))
            for clients in args.clients:
                for setup, (_, port, _) in running.items():
                    per_client = max(2, args.requests // clients)
                    http[setup][clients].append(http_timing(port, jpeg, clients, per_client))
    finally:
        for server, _, _ in running.values():
            processes.stop_server(server)
    return http, raw


def compare_startup(model_dir: Path, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """Start-up phases of each variant (and of --baseline-tree's serve), started in turn,
    --runs times (each stopped before the next starts: a start is what is measured)."""
    variants: dict[str, tuple[dict[str, str], Path | None]] = {
        name: (env, None) for name, env in STARTUP_VARIANTS.items()
    }
    if args.baseline_tree:
        variants[f"serve of {args.baseline_tree}"] = ({}, args.baseline_tree)
    phases: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for run in range(args.runs):
        for index, (name, (env, tree)) in enumerate(variants.items()):
            log_name = f"startup-{run}-{index}"
            server, _, started = start_server(model_dir, args.work_dir, env, log_name, tree)
            processes.stop_server(server)
            phases[name].append(started)
    return phases


# -------------------------------------------------------------------------------- report


def forward_models(model_dir: Path, device: torch.device) -> dict[str, handler.LoadedModel]:
    """The artifact as a worker prepares it, in fp32 and in the `auto` precision."""
    models = {choice: handler.load_model(model_dir, device, choice) for choice in ("fp32", "auto")}
    if models["auto"].precision == "fp32" and device.type == "cpu":
        models["bf16"] = handler.load_model(model_dir, device, "bf16")  # forced: emulated
    return models


def precision_label(model: handler.LoadedModel) -> str:
    native = precision.is_native(model.precision, model.device)
    return model.precision + ("" if native else " (emulated: no native support)")


def agreement_rows(
    models: dict[str, handler.LoadedModel], images: list[Path], forward: dict[str, Timing]
) -> list[str]:
    """Top-1 agreement with fp32, the largest probability difference, and the largest logit
    difference as a share of fp32's logit range (probabilities of a model with random
    backbone weights saturate at 0 and 1, where no difference shows)."""
    pictures = [open_rgb(path.read_bytes()) for path in images]
    reference = handler.forward_logits(models["fp32"], pictures).float()
    spread = float(reference.max() - reference.min())
    rows = []
    for choice, model in models.items():
        if choice == "fp32":
            continue
        logits = handler.forward_logits(model, pictures).float()
        agree = float((logits.argmax(1) == reference.argmax(1)).float().mean())
        probability = float((logits.softmax(1) - reference.softmax(1)).abs().max())
        logit = float((logits - reference).abs().max()) / spread
        speed_up = forward[choice].throughput / forward["fp32"].throughput
        rows.append(
            f"| {choice} -> {precision_label(model)} | {len(pictures)} | {agree:.1%} | "
            f"{probability:.4f} | {logit:.2%} | {speed_up:.2f}x |"
        )
    return rows


def speed_row(name: str, clients: str, timing: Timing, raw: Timing) -> str:
    return (
        f"| {name} | {clients} | {timing.p50_ms:.1f} | {timing.p99_ms:.1f} | "
        f"{timing.throughput:.1f} | {timing.p50_ms / raw.p50_ms:.2f} | "
        f"{timing.throughput / raw.throughput:.2f} |"
    )


def print_speed(results: Results, batch_size: int, clients: list[int]) -> None:
    print("| measurement | clients | p50 ms | p99 ms | images/s | p50 / raw p50 | images/s / raw |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (choice, size), timing in results.raw.items():
        name = f"raw forward, {results.resolved[choice]}, batch {size}"
        print(speed_row(name, "-", timing, timing))
    for setup, by_clients in results.http.items():
        raw = results.raw[(setup.precision, batch_size if setup.batching else 1)]
        name = f"POST /invocations, {setup.name} ({results.resolved[setup.precision]})"
        for count in clients:
            print(speed_row(name, str(count), by_clients[count], raw))
    print()
    most, least = max(clients), min(clients)
    for setup, on in results.http.items():
        if not setup.batching:
            continue
        off = results.http[Setup(False, setup.precision)]
        throughput = on[most].throughput / off[most].throughput
        latency = on[least].p50_ms / off[least].p50_ms
        print(
            f"{setup.name} ({results.resolved[setup.precision]}) / batching off: "
            f"{throughput:.2f}x images/s at {most} clients, {latency:.2f}x p50 at {least} client(s)"
        )


def print_startup(phases: dict[str, list[dict[str, float]]]) -> None:
    names = list(dict.fromkeys(name for runs in phases.values() for run in runs for name in run))
    print("| start-up phase (s, medians) | " + " | ".join(phases) + " |")
    print("| --- |" + " --- |" * len(phases))
    for name in names:
        cells = []
        for runs in phases.values():
            values = [run[name] for run in runs if name in run]
            cells.append(f"{statistics.median(values):.2f}" if values else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model-dir", type=Path, help="a training job's model/ (default: train one)")
    add("--image", type=Path, help="a JPEG to send (default: a generated 500x375 one)")
    photos.add_data_argument(parser)  # its test/ photos: the precision agreement
    add("--work-dir", type=Path, default=Path("build/bench-serve"), help="logs, trained model")
    add("--runs", type=int, default=3, help="runs per measurement (default: 3)")
    add("--requests", type=int, default=48, help="requests per client count and run (default: 48)")
    add("--clients", type=int, nargs="+", default=[1, 4, 16], help="(default: 1 4 16)")
    add("--agreement-images", type=int, default=154, help="images compared (default: 154)")
    add("--precisions", nargs="+", default=["fp32", "auto"], choices=["fp32", "auto"])
    add("--delays", type=int, nargs="+", help="batch delays (ms) to compare (default: serve's)")
    add("--startup-only", action="store_true", help="only the start-up phases")
    add(
        "--baseline-tree",
        type=Path,
        help="a checkout of an earlier version of this repository: its serve's start-up too",
    )
    return parser


@dataclass
class Results:
    """Medians over the runs."""

    resolved: dict[str, str]  # precision choice -> what it resolved to on this device
    raw: dict[tuple[str, int], Timing]  # (choice, batch size) -> raw forward
    http: dict[Setup, dict[int, Timing]]  # setup -> clients -> timing
    phases: dict[str, list[dict[str, float]]]  # start-up variant -> one dict per start


def collect(
    model_dir: Path, jpeg: bytes, models: dict[str, handler.LoadedModel], args: argparse.Namespace
) -> Results:
    batch_size = contract.read_settings().batch_size
    http: dict[Setup, dict[int, list[Timing]]] = {}
    raw: dict[tuple[str, int], list[Timing]] = {}
    for choice in args.precisions:
        by_setup, by_size = compare_batching(
            model_dir, jpeg, models[choice], choice, batch_size, args
        )
        http.update(by_setup)
        raw.update({(choice, size): timings for size, timings in by_size.items()})
        print(f"{choice} done; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    for choice in set(models) - set(args.precisions):  # the raw forward only
        for size in sorted({1, batch_size}):
            raw[(choice, size)] = [time_forward(models[choice], size, max(5, 40 // size))]
    phases = compare_startup(model_dir, args)
    return Results(
        resolved={choice: model.precision for choice, model in models.items()},
        raw={key: median_timing(timings) for key, timings in raw.items()},
        http={s: {c: median_timing(t) for c, t in by.items()} for s, by in http.items()},
        phases=phases,
    )


def describe(model_dir: Path, jpeg: bytes, device: torch.device, runs: int) -> str:
    settings = contract.read_settings()
    return (
        f"model {model_dir}, input {read_config(model_dir).preprocessing.image_size} px; "
        f"{len(jpeg):,} byte JPEG {Image.open(io.BytesIO(jpeg)).size}; device {device}; "
        f"{len(os.sched_getaffinity(0))} cores; {settings.workers} worker(s) x "
        f"{settings.torch_threads} thread(s), server batch {settings.batch_size}, delay "
        f"{settings.max_batch_delay_ms} ms; load average {os.getloadavg()[0]:.1f}; "
        f"medians of {runs} runs\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or train_bench_model(args.work_dir, args.data)
    jpeg = args.image.read_bytes() if args.image else photo_like_jpeg()
    settings = contract.read_settings()
    device = bench_device()
    torch.set_num_threads(settings.torch_threads)  # what `serve` gives each worker
    if args.startup_only:
        print(describe(model_dir, jpeg, device, args.runs))
        print_startup(compare_startup(model_dir, args))
        return 0
    models = forward_models(model_dir, device)
    results = collect(model_dir, jpeg, models, args)

    print(describe(model_dir, jpeg, device, args.runs))
    print_speed(results, settings.batch_size, args.clients)
    images, described = agreement_images(args.data, args.work_dir, args.agreement_images)
    print(
        f"\nprecision against fp32 on {described} (raw forward at batch {settings.batch_size}):\n"
    )
    print(
        "| precision | images | top-1 agreement | max probability difference "
        "| max logit difference / logit range | speed-up |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    forward = {choice: results.raw[(choice, settings.batch_size)] for choice in models}
    print("\n".join(agreement_rows(models, images, forward)))
    print()
    print_startup(results.phases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
