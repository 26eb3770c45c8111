"""Serving speed on both backends: latency and throughput of torch (fp32, `auto`) and ONNX
Runtime (fp32, int8) against their raw forward and against torch fp32, with batching off and
on; each worker's memory; each precision's agreement with torch fp32; start-up, as processes
and (with --images) as containers; the images' sizes.

    python bench/serve_speed.py [--model-dir DIR] [--data PHOTOS] [--runs 3] [--clients 1 4 16]
                                [--configs torch:fp32 torch:auto onnx:fp32 onnx:int8]
                                [--delays MS ...] [--images GPU_IMAGE CPU_IMAGE]
    python bench/serve_speed.py --startup-only [--baseline-tree CHECKOUT] [--runs 5]

Starts the real `serve` (as `scripts/local.py serve` does) once per setup and run, and sends
one 500x375 JPEG again and again from 1, 4 and 16 concurrent keep-alive clients. In the same
run, in this process, it times the raw forward of the same artifact, prepared as a worker
prepares it (device, precision, channels_last), at batch 1 and at the server's batch size:
every HTTP row is compared with the raw forward at the batch size the server would use.
Every number is the median over --runs runs; setups alternate within a run, so that they see
the same load on a shared machine. Also prints:

- the CPU's instruction sets that decide what int8 and bf16 gain (AVX2, AVX-512, VNNI, AMX);
- the ratio table against torch fp32 measured in the same run (raw forward at batch 1, a lone
  client's p50, images/s at the most clients, worker memory) with the issue's goals;
- worker memory: the RSS (and the unique set, USS) of each server's workers after warm-up;
- the precision table: top-1 agreement of every other configuration (and of a forced bf16
  where torch's `auto` is fp32) with torch fp32 on the photos of --data (default: generated
  images), the largest probability difference, and the raw-forward speed-up; a precision the
  device lacks says "emulated";
- with --images (a Docker engine at DOCKER_HOST): each image's size, and the seconds from
  `docker run` to the first /ping 200 and to the first classification, --runs times;
- the start-up phases as `serve` logs them, with the start-up optimisations (JVM flags,
  class archive, preloaded torch) on, and off in the same run, and with --baseline-tree the
  phases of the `serve` of another checkout of this repository (an earlier version).

Runs unchanged on a GPU machine: the server then uses one worker per GPU and its GPU batch
size, and the raw forward runs on the first GPU. Without --model-dir it trains a model with
the real `train` (pretrained off, 224 px, one epoch on the photos, or on generated images
where there are none) and keeps it in --work-dir for the next run: speed does not depend on
the weights, the precision agreement is only meaningful for a model of real photos. The ONNX
configurations need the model's ONNX graphs (`scripts/local.py export --model-dir DIR`
writes them for a model trained without).
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
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import photos
import psutil
import torch
from PIL import Image

from launch.local import client, processes
from launch.local.jobdir import layout_serving_dir
from launch.synthetic_images import make_dataset
from model_artifact import precision
from model_artifact.config import ONNX_INPUT, ONNX_OUTPUT, read_config
from model_artifact.preprocessing import open_rgb
from serving import contract, handler, state
from serving.backends.onnx_backend import OnnxRunner
from serving.backends.torch_backend import TorchRunner
from trainer.contract import TrainingPaths

IMAGE_SIZE = (500, 375)  # the classic cats-vs-dogs photo size
BASELINE = ("torch", "fp32")  # what every ratio is measured against
# Instruction sets that decide what int8 (VNNI) and bf16 (AVX512-BF16, AMX) gain on a CPU.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
# The goals on this machine, checked in the ratio table.
GOAL_INT8_FORWARD = 2.5  # ONNX int8 raw forward at batch 1 against torch fp32
GOAL_INT8_LONE_P50 = 2.0  # a lone client's p50 over HTTP, torch fp32 / ONNX int8
GOAL_WORKER_MEMORY = 0.40  # an ONNX worker's RSS / a torch worker's
GOAL_CPU_IMAGE_BYTES = 1.2e9
GOAL_CONTAINER_READY_S = 2.0


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p99_ms: float
    throughput: float  # images per second


Config = tuple[str, str]  # (backend, SERVING_PRECISION)


@dataclass(frozen=True)
class Setup:
    """One server configuration: a backend in one precision, batching on (with a delay, or
    the default) or off."""

    config: Config
    batching: bool
    delay_ms: int | None = None  # None: serve's default

    @property
    def name(self) -> str:
        backend, choice = self.config
        if not self.batching:
            return f"{backend} {choice}, batching off"
        delay = "" if self.delay_ms is None else f" ({self.delay_ms} ms)"
        return f"{backend} {choice}, batching on{delay}"

    @property
    def log_name(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def env(self, batch_size: int) -> dict[str, str]:
        backend, choice = self.config
        env = {
            contract.BACKEND_ENV: backend,
            contract.BATCH_SIZE_ENV: str(batch_size if self.batching else 1),
            contract.PRECISION_ENV: choice,
        }
        if self.delay_ms is not None:
            env[contract.MAX_BATCH_DELAY_ENV] = str(self.delay_ms)
        return env


def parse_config(text: str) -> Config:
    backend, _, choice = text.partition(":")
    if backend not in contract.BACKEND_RUNTIMES or choice not in contract.PRECISIONS:
        raise argparse.ArgumentTypeError(f"expected BACKEND:PRECISION, e.g. onnx:int8, got {text}")
    return backend, choice


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


def cpu_description() -> str:
    """The CPU's model name and which of CPU_FLAGS it has (Linux's /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU: unknown (no /proc/cpuinfo)"
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", info, re.MULTILINE)
    flags = set(flags_line[1].split()) if flags_line else set()
    listed = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    return f"CPU: {model[1] if model else 'unknown'}; {listed}"


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


def forward_call(model: handler.LoadedModel, batch_size: int) -> Callable[[], None]:
    """One raw forward of the network on a preprocessed batch already in place."""
    size = model.preprocessing.image_size
    runner = model.runner
    if isinstance(runner, OnnxRunner):
        batch = np.random.default_rng(0).standard_normal((batch_size, 3, size, size))
        feed = {ONNX_INPUT: batch.astype(np.float32)}

        def run_session() -> None:
            runner.session.run([ONNX_OUTPUT], feed)

        return run_session
    assert isinstance(runner, TorchRunner)
    tensor = torch.randn(batch_size, 3, size, size).to(
        runner.device, dtype=runner.input_dtype, memory_format=torch.channels_last
    )
    cuda = runner.device.type == "cuda"

    def call() -> None:
        with torch.inference_mode():
            runner.network(tensor)
        if cuda:
            torch.cuda.synchronize()

    return call


def time_forward(model: handler.LoadedModel, batch_size: int, count: int) -> Timing:
    """The raw network on a preprocessed batch already in place: the floor of serving."""
    call = forward_call(model, batch_size)
    for _ in range(3):  # warm up this batch size
        call()
    durations = []
    started = time.perf_counter()
    for _ in range(count):
        begin = time.perf_counter()
        call()
        durations.append(time.perf_counter() - begin)
    return percentiles(durations, time.perf_counter() - started, batch_size)


def http_timing(port: int, jpeg: bytes, clients: int, per_client: int) -> Timing:
    """`clients` threads, each with its own keep-alive connection, POST the image."""
    durations: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def send() -> None:
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

    threads = [threading.Thread(target=send) for _ in range(clients)]
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


@dataclass
class Running:
    server: subprocess.Popen[bytes]
    port: int
    phases: dict[str, float]
    tmp_dir: Path  # its TMPDIR: the runtime folder where workers report, under it

    def worker_memory(self) -> tuple[float, float]:
        """(RSS, USS) in MiB, the mean over this server's workers (pids of their reports)."""
        pids = [
            pid for runtime in self.tmp_dir.glob("serve-*") for pid in state.worker_timings(runtime)
        ]
        rss, uss = [], []
        for pid in pids:
            try:
                memory = psutil.Process(pid).memory_full_info()
            except psutil.Error:
                continue
            rss.append(memory.rss / 2**20)
            uss.append(memory.uss / 2**20)
        return (statistics.mean(rss), statistics.mean(uss)) if rss else (float("nan"),) * 2


def start_server(
    model_dir: Path,
    work_dir: Path,
    env: dict[str, str],
    log_name: str,
    source_tree: Path | None = None,
) -> Running:
    """`serve` on a free port with a TMPDIR of its own, waited for. With `source_tree`, the
    `serve` of that checkout of this repository runs instead (its packages first on the
    import path, this environment's dependencies)."""
    port = processes.free_port()
    log_path = work_dir / f"{log_name}.log"
    tmp_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    env = {**env, "TMPDIR": str(tmp_dir), "TEMP": str(tmp_dir)}
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
    return Running(
        server, port, startup_phases(log_path.read_text(errors="replace"), wall_s), tmp_dir
    )


def stop(running: Running) -> None:
    processes.stop_server(running.server)
    for leftover in running.tmp_dir.glob("*"):
        if leftover.is_file():
            leftover.unlink()
    if not any(running.tmp_dir.iterdir()):
        running.tmp_dir.rmdir()


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


def docker(*args: str, timeout: float = 120) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=True
    ).stdout.strip()


def container_startup(image: str, model_dir: Path, jpeg: bytes) -> dict[str, float]:
    """`docker run IMAGE serve` as SageMaker runs it (host network, loopback, the model
    mounted read-only): seconds to the first /ping 200 and to the first classification."""
    port = processes.free_port()
    started = time.perf_counter()
    container = docker(
        "run", "--detach", "--network", "host",
        "-e", f"{contract.BIND_TO_PORT_ENV}={port}",
        "--volume", f"{model_dir.resolve()}:/opt/ml/model:ro",
        image, "serve",
    )  # fmt: skip
    seconds: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 300
        while "classified" not in seconds and time.monotonic() < deadline:
            if "ping" not in seconds and client.ping(port):
                seconds["ping"] = time.perf_counter() - started
            if "ping" in seconds and post_status(port, jpeg) == 200:
                seconds["classified"] = time.perf_counter() - started
            time.sleep(0.01)
    finally:
        docker("rm", "--force", container)
    if "classified" not in seconds:
        raise RuntimeError(f"{image} did not classify an image within 300 s")
    return seconds


def post_status(port: int, jpeg: bytes) -> int:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/invocations", jpeg, {"Content-Type": "image/jpeg"})
        status = connection.getresponse().status
        connection.close()
        return status
    except OSError:
        return 0


# ----------------------------------------------------------------------------- one run


STARTUP_VARIANTS = {
    "this serve": {},
    "JVM defaults, no class archive, no preload": {
        contract.MODEL_SERVER_VMARGS_ENV: "-Xshare:auto",
        contract.PRELOAD_ENV: "false",
    },
    "this serve, onnx": {contract.BACKEND_ENV: "onnx"},
}


@dataclass
class Results:
    """Medians over the runs."""

    resolved: dict[Config, str]  # configuration -> the precision it resolved to here
    raw: dict[tuple[Config, int], Timing]  # (configuration, batch size) -> raw forward
    http: dict[Setup, dict[int, Timing]]  # setup -> clients -> timing
    memory: dict[Config, tuple[float, float]]  # configuration -> worker (RSS, USS) MiB
    phases: dict[str, list[dict[str, float]]]  # start-up variant -> one dict per start


def setups_of(configs: Sequence[Config], args: argparse.Namespace) -> list[Setup]:
    """Batching on (serve's default delay, or each of --delays) for every configuration;
    off too with --batching-off."""
    delays = args.delays or [None]
    setups = [Setup(config, True, delay) for config in configs for delay in delays]
    if args.batching_off:
        setups += [Setup(config, False) for config in configs]
    return setups


def measure(
    model_dir: Path,
    jpeg: bytes,
    models: dict[Config, handler.LoadedModel],
    batch_size: int,
    args: argparse.Namespace,
) -> Results:
    """Every server up, measured in turn in every round (with the raw forward of every
    configuration at batch 1 and at the server's batch size in the same rounds), so that
    each ratio compares measurements taken under the same load."""
    setups = setups_of(args.configs, args)
    running = {
        setup: start_server(model_dir, args.work_dir, setup.env(batch_size), setup.log_name)
        for setup in setups
    }
    http: dict[Setup, dict[int, list[Timing]]] = {s: {c: [] for c in args.clients} for s in setups}
    sizes = sorted({1, batch_size})
    raw: dict[tuple[Config, int], list[Timing]] = {(c, n): [] for c in models for n in sizes}
    memory: dict[Config, tuple[float, float]] = {}
    try:
        for setup, server in running.items():
            processes.wait_until_ready(server.port, server.server)
            for clients in args.clients:  # every batch size and connection once, untimed
                http_timing(server.port, jpeg, clients, 2)
            memory.setdefault(setup.config, server.worker_memory())
        for run in range(args.runs):
            for (config, size), timings in raw.items():
                timings.append(time_forward(models[config], size, max(5, 40 // size)))
            for clients in args.clients:
                for setup, server in running.items():
                    per_client = max(2, args.requests // clients)
                    http[setup][clients].append(http_timing(server.port, jpeg, clients, per_client))
            print(f"run {run + 1} done; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    finally:
        for server in running.values():
            stop(server)
    return Results(
        resolved={config: model.precision for config, model in models.items()},
        raw={key: median_timing(timings) for key, timings in raw.items()},
        http={s: {c: median_timing(t) for c, t in by.items()} for s, by in http.items()},
        memory=memory,
        phases=compare_startup(model_dir, args),
    )


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
            server = start_server(model_dir, args.work_dir, env, f"startup-{run}-{index}", tree)
            stop(server)
            phases[name].append(server.phases)
    return phases


# -------------------------------------------------------------------------------- report


def forward_models(model_dir: Path, configs: Sequence[Config]) -> dict[Config, handler.LoadedModel]:
    """The artifact as a worker prepares it, for each configuration (torch fp32 first: the
    baseline), and torch in a forced bf16 where torch's `auto` is fp32 on a CPU."""
    models = {
        config: handler.load_model(model_dir, *config)
        for config in dict.fromkeys([BASELINE, *configs])
    }
    torch_auto = models.get(("torch", "auto"))
    if (
        torch_auto is not None
        and torch_auto.precision == "fp32"
        and torch_auto.runner.place == "cpu"
    ):
        models[("torch", "bf16")] = handler.load_model(model_dir, "torch", "bf16")  # emulated
    return models


def precision_label(config: Config, model: handler.LoadedModel) -> str:
    runner = model.runner
    if isinstance(runner, TorchRunner) and not precision.is_native(model.precision, runner.device):
        return f"{model.precision} (emulated: no native support)"
    return model.precision


def agreement_rows(
    models: dict[Config, handler.LoadedModel], images: list[Path], forward: dict[Config, Timing]
) -> list[str]:
    """Top-1 agreement with torch fp32, the largest probability difference, and the largest
    logit difference as a share of fp32's logit range (probabilities of a model with random
    backbone weights saturate at 0 and 1, where no difference shows)."""
    pictures = [open_rgb(path.read_bytes()) for path in images]
    reference = handler.forward_logits(models[BASELINE], pictures)
    spread = float(reference.max() - reference.min())
    rows = []
    for config, model in models.items():
        if config == BASELINE:
            continue
        logits = handler.forward_logits(model, pictures)
        agree = float((logits.argmax(1) == reference.argmax(1)).mean())
        probability = float(np.abs(handler.softmax(logits) - handler.softmax(reference)).max())
        logit = float(np.abs(logits - reference).max()) / spread
        speed_up = forward[config].throughput / forward[BASELINE].throughput
        rows.append(
            f"| {config[0]} {config[1]} -> {precision_label(config, model)} | {len(pictures)} | "
            f"{agree:.1%} | {probability:.4f} | {logit:.2%} | {speed_up:.2f}x |"
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
    for (config, size), timing in results.raw.items():
        name = f"raw forward, {config[0]} {results.resolved[config]}, batch {size}"
        print(speed_row(name, "-", timing, timing))
    for setup, by_clients in results.http.items():
        raw = results.raw[(setup.config, batch_size if setup.batching else 1)]
        name = f"POST /invocations, {setup.name} ({results.resolved[setup.config]})"
        for count in clients:
            print(speed_row(name, str(count), by_clients[count], raw))
    print()
    most, least = max(clients), min(clients)
    for setup, on in results.http.items():
        off = results.http.get(Setup(setup.config, False))
        if not setup.batching or off is None:
            continue
        throughput = on[most].throughput / off[most].throughput
        latency = on[least].p50_ms / off[least].p50_ms
        print(
            f"{setup.name} / batching off: "
            f"{throughput:.2f}x images/s at {most} clients, {latency:.2f}x p50 at {least} client(s)"
        )


def print_ratios(results: Results, clients: list[int]) -> None:
    """Every configuration against torch fp32, measured in the same run; the goals."""
    default = {setup.config: by for setup, by in results.http.items() if setup.batching}
    most, least = max(clients), min(clients)
    base_raw, base_http = results.raw[(BASELINE, 1)], default.get(BASELINE)
    base_memory = results.memory.get(BASELINE, (float("nan"),) * 2)
    print(
        "| against torch fp32 (same run) | raw forward batch 1 | lone client p50 "
        f"| images/s at {most} clients | worker RSS MiB (USS) | RSS / torch's |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for config in results.memory:
        http = default[config]
        rss, uss = results.memory[config]
        forward = base_raw.p50_ms / results.raw[(config, 1)].p50_ms
        lone = base_http[least].p50_ms / http[least].p50_ms if base_http else float("nan")
        many = http[most].throughput / base_http[most].throughput if base_http else float("nan")
        print(
            f"| {config[0]} {config[1]} ({results.resolved[config]}) | {forward:.2f}x | "
            f"{lone:.2f}x | {many:.2f}x | {rss:.0f} ({uss:.0f}) | {rss / base_memory[0]:.2f} |"
        )
    int8 = ("onnx", "int8")
    if int8 in results.memory and base_http:
        goals = [
            (
                "ONNX int8 raw forward at batch 1 / torch fp32",
                base_raw.p50_ms / results.raw[(int8, 1)].p50_ms,
                GOAL_INT8_FORWARD,
                True,
            ),
            (
                "torch fp32 lone-client p50 / ONNX int8",
                base_http[least].p50_ms / default[int8][least].p50_ms,
                GOAL_INT8_LONE_P50,
                True,
            ),
            (
                "ONNX int8 worker RSS / torch fp32",
                results.memory[int8][0] / base_memory[0],
                GOAL_WORKER_MEMORY,
                False,
            ),
        ]
        print()
        for name, value, goal, at_least in goals:
            met = value >= goal if at_least else value <= goal
            sign = ">=" if at_least else "<="
            print(f"goal {name} {sign} {goal}: {value:.2f} ({'met' if met else 'NOT met'})")


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


def print_images(images: Sequence[str], model_dir: Path, jpeg: bytes, runs: int) -> None:
    """Each image's size, and its container's start to the first /ping 200 and the first
    classification (medians of `runs`)."""
    print("| image | size GB | docker run to first /ping 200, s | to first classification, s |")
    print("| --- | --- | --- | --- |")
    for image in images:
        size = int(docker("image", "inspect", "--format", "{{.Size}}", image))
        starts = [container_startup(image, model_dir, jpeg) for _ in range(runs)]
        ping = statistics.median(start["ping"] for start in starts)
        ready = statistics.median(start["classified"] for start in starts)
        print(f"| {image} | {size / 1e9:.2f} | {ping:.2f} | {ready:.2f} |")
    print(
        f"\ngoals: the CPU image under {GOAL_CPU_IMAGE_BYTES / 1e9} GB, container start to "
        f"ready at most {GOAL_CONTAINER_READY_S} s"
    )


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
    add(
        "--configs",
        type=parse_config,
        nargs="+",
        default=[("torch", "fp32"), ("torch", "auto"), ("onnx", "fp32"), ("onnx", "int8")],
        help="BACKEND:PRECISION servers (default: torch:fp32 torch:auto onnx:fp32 onnx:int8)",
    )
    add("--delays", type=int, nargs="+", help="batch delays (ms) to compare (default: serve's)")
    add("--batching-off", action="store_true", help="also each configuration without batching")
    add(
        "--images",
        nargs="+",
        default=[],
        help="serving images to size and start as containers (a Docker engine at DOCKER_HOST)",
    )
    add("--startup-only", action="store_true", help="only the start-up phases")
    add(
        "--baseline-tree",
        type=Path,
        help="a checkout of an earlier version of this repository: its serve's start-up too",
    )
    return parser


def describe(model_dir: Path, jpeg: bytes, device: str, runs: int) -> str:
    settings = contract.read_settings()
    return (
        f"model {model_dir}, input {read_config(model_dir).preprocessing.image_size} px; "
        f"{len(jpeg):,} byte JPEG {Image.open(io.BytesIO(jpeg)).size}; device {device}; "
        f"{len(os.sched_getaffinity(0))} cores; {settings.workers} worker(s) x "
        f"{settings.torch_threads} thread(s), server batch {settings.batch_size}, delay "
        f"{settings.max_batch_delay_ms} ms; load average {os.getloadavg()[0]:.1f}; "
        f"medians of {runs} runs\n{cpu_description()}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or train_bench_model(args.work_dir, args.data)
    jpeg = args.image.read_bytes() if args.image else photo_like_jpeg()
    settings = contract.read_settings()
    # What `serve` gives each worker: torch reads the threads here, ONNX Runtime from the env.
    torch.set_num_threads(settings.torch_threads)
    os.environ[contract.TORCH_THREADS_ENV] = str(settings.torch_threads)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if args.startup_only:
        print(describe(model_dir, jpeg, device, args.runs))
        print_startup(compare_startup(model_dir, args))
        return 0
    models = forward_models(model_dir, args.configs)
    results = measure(model_dir, jpeg, models, settings.batch_size, args)

    print(describe(model_dir, jpeg, device, args.runs))
    print_ratios(results, args.clients)
    print()
    print_speed(results, settings.batch_size, args.clients)
    images, described = agreement_images(args.data, args.work_dir, args.agreement_images)
    print(f"\nagainst torch fp32 on {described} (raw forward at batch {settings.batch_size}):\n")
    print(
        "| configuration | images | top-1 agreement | max probability difference "
        "| max logit difference / logit range | speed-up |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    forward = {config: results.raw[(config, settings.batch_size)] for config in models}
    print("\n".join(agreement_rows(models, images, forward)))
    print()
    print_startup(results.phases)
    if args.images:
        print()
        print_images(args.images, model_dir, jpeg, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
