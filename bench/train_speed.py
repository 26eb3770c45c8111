"""Training speed: the textbook loop against this project's path, measured in the same run.

    python bench/train_speed.py [--data DIR] [--repeats 3] [--image-size 224] [--epochs 5]
                                [--jobs textbook,cache_off,project,tuning,scaling,head_ddp]

Every job runs as its own process on the real photos, timed from start to exit as a
user waits for it (random weights: speed only, not accuracy). Per repeat:
  - textbook:  bench/textbook_loop.py, the tutorial loop: the backbone runs on every
               image in every epoch;
  - cache_off: the real `train` command with feature_cache=off and amp=off: this
               project's backbone and pipeline, but recomputed every epoch like the
               textbook (the cache's share of the speed-up);
  - project:   the real `train` command with its defaults: features computed once;
  - tuning:    three `train` trials with different lr sharing one feature cache, as
               `local.py tune` runs them: the cost of the 2nd and 3rd against the 1st;
  - scaling:   the real `train` command with 1 and with 2 workers on this host
               (workers_per_host), for train_layers=head and train_layers=layer4;
  - head_ddp:  one head epoch on 8,192 cached feature vectors, in one process and in two
               DistributedDataParallel processes (gloo): does DDP pay for the head?
Prints each repeat, then the medians and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from photos import add_data_argument, missing

from launch.local.processes import free_port
from launch.local.tuning import run_trial

JOBS = ("textbook", "cache_off", "project", "tuning", "scaling", "head_ddp")
DEFAULT_JOBS = ("textbook", "cache_off", "project", "tuning")
SCALING = {
    f"{layers}_w{workers}": (layers, workers) for layers in ("head", "layer4") for workers in (1, 2)
}


def timed(job: Callable[[], tuple[int, str]], name: str) -> float:
    started = time.perf_counter()
    exit_code, log = job()
    seconds = time.perf_counter() - started
    if exit_code != 0:
        sys.exit(f"{name} failed:\n{log[-3000:]}")
    return seconds


def textbook_job(data: Path, out: Path, epochs: int, image_size: int) -> tuple[int, str]:
    command = [sys.executable, str(Path(__file__).with_name("textbook_loop.py"))]
    arguments = ["--data", str(data), "--out", str(out), "--epochs", str(epochs)]
    arguments += ["--image-size", str(image_size)]
    completed = subprocess.run([*command, *arguments], capture_output=True, text=True, check=False)
    return completed.returncode, completed.stdout + completed.stderr


def repeat_once(
    data: Path, run: Path, jobs: set[str], epochs: int, image_size: int
) -> dict[str, float]:
    base = {"pretrained": "false", "epochs": str(epochs), "image_size": str(image_size)}
    seconds: dict[str, float] = {}
    if "textbook" in jobs:
        seconds["textbook"] = timed(
            lambda: textbook_job(data, run / "textbook", epochs, image_size), "textbook loop"
        )
    if "cache_off" in jobs:
        off = {**base, "feature_cache": "off", "amp": "off"}
        seconds["cache_off"] = timed(
            lambda: run_trial(data, run / "cache_off", None, off), "cache_off"
        )
    if "project" in jobs:
        seconds["project"] = timed(lambda: run_trial(data, run / "project", None, base), "project")
    if "tuning" in jobs:
        cache = run / "shared_cache"
        cache.mkdir(parents=True)
        for trial, lr in enumerate(("0.001", "0.0003", "0.003"), start=1):
            job = partial(run_trial, data, run / f"trial{trial}", cache, {**base, "lr": lr})
            seconds[f"trial{trial}"] = timed(job, f"trial{trial}")
    if "scaling" in jobs:
        for name, (layers, workers) in SCALING.items():
            settings = {**base, "train_layers": layers, "workers_per_host": str(workers)}
            seconds[name] = timed(partial(run_trial, data, run / name, None, settings), name)
    if "head_ddp" in jobs:
        for workers in (1, 2):
            seconds[f"head_epoch_w{workers}"] = head_epoch_seconds(workers)
    return seconds


HEAD_ITEMS = 8192


def head_epoch_seconds(workers: int) -> float:
    """Median seconds of a head epoch (batch 64) on cached features, on `workers` processes
    (DDP over gloo when more than one, each with its share of every global batch)."""
    import torch.multiprocessing as mp  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "seconds.json"
        port = str(free_port())
        mp.spawn(head_epoch_worker, (workers, port, str(result)), nprocs=workers, join=True)
        return float(json.loads(result.read_text()))


def head_epoch_worker(rank: int, workers: int, port: str, result: str) -> None:
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415
    from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

    from trainer.cluster import Cluster  # noqa: PLC0415
    from trainer.engine import epoch_order, share_batches, train_one_epoch  # noqa: PLC0415
    from trainer.model import FEATURE_DIM, build_head  # noqa: PLC0415
    from trainer.sources import CachedFeatures  # noqa: PLC0415

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    cluster = Cluster(rank=rank, world_size=workers, local_world_size=workers)
    if workers > 1:
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
        dist.init_process_group("gloo", rank=rank, world_size=workers)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(HEAD_ITEMS, FEATURE_DIM, generator=generator)
    labels = torch.randint(0, 2, (HEAD_ITEMS,), generator=generator)
    source = CachedFeatures(features, labels, torch.device("cpu"))
    torch.manual_seed(0)
    head: torch.nn.Module = build_head(2, 256, 0.2)
    optimizer = torch.optim.AdamW(head.parameters())
    if workers > 1:
        head = DistributedDataParallel(head)
    criterion = torch.nn.CrossEntropyLoss()
    times = []
    for epoch in range(1, 5):  # the first is a warm-up
        batches = share_batches(source, epoch_order(HEAD_ITEMS, 0, epoch), 64, cluster)
        started = time.perf_counter()
        train_one_epoch(head, batches, optimizer, criterion, epoch, cluster)
        times.append(time.perf_counter() - started)
    if rank == 0:
        Path(result).write_text(json.dumps(statistics.median(times[1:])))
    if workers > 1:
        dist.destroy_process_group()


def print_table(median: dict[str, float]) -> None:
    def faster(name: str, baseline: str) -> str:
        return f"{median[baseline] / median[name]:.2f}x" if baseline in median else ""

    rows = {
        "textbook": ("textbook loop (bench/textbook_loop.py)", "", ""),
        "cache_off": ("this project, feature_cache=off", "textbook", ""),
        "project": ("this project (defaults: feature cache)", "textbook", "cache_off"),
    }
    if rows.keys() & median.keys():
        print("| job | seconds | faster than textbook | faster than cache off |")
        print("| --- | ---: | ---: | ---: |")
    for name, (label, *baselines) in rows.items():
        if name in median:
            ratios = [faster(name, baseline) if baseline else "" for baseline in baselines]
            print(f"| {label} | {median[name]:.1f} | {' | '.join(ratios)} |")
    if "head_w1" in median:
        print("\n| workers on this host (workers_per_host) | seconds | speed-up over 1 worker |")
        print("| --- | ---: | ---: |")
        for name, (layers, workers) in SCALING.items():
            baseline = median[f"{layers}_w1"]
            print(
                f"| train_layers={layers}, {workers} worker(s) | {median[name]:.1f} | "
                f"{baseline / median[name]:.2f}x |"
            )
    if "head_epoch_w1" in median:
        print(f"\n| head epoch, {HEAD_ITEMS} cached features, batch 64 | seconds | ratio |")
        print("| --- | ---: | ---: |")
        for workers in (1, 2):
            seconds = median[f"head_epoch_w{workers}"]
            ratio = seconds / median["head_epoch_w1"]
            print(
                f"| {workers} process(es){' (DDP, gloo)' if workers > 1 else ''} | "
                f"{seconds:.3f} | {ratio:.2f} |"
            )
    if "trial1" in median:
        print("\n| tuning trial (one shared feature cache) | seconds | share of trial 1 |")
        print("| --- | ---: | ---: |")
        for number in (1, 2, 3):
            seconds = median[f"trial{number}"]
            print(f"| trial {number} | {seconds:.1f} | {seconds / median['trial1']:.0%} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_argument(parser)
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default: 3)")
    parser.add_argument("--image-size", type=int, default=224, help="(default: 224)")
    parser.add_argument("--epochs", type=int, default=5, help="(default: 5)")
    parser.add_argument(
        "--jobs",
        default=",".join(DEFAULT_JOBS),
        help=f"which to time, of {','.join(JOBS)} (default: {','.join(DEFAULT_JOBS)})",
    )
    args = parser.parse_args()
    jobs = set(args.jobs.split(","))
    if not jobs <= set(JOBS):
        parser.error(f"--jobs takes a comma-separated subset of {', '.join(JOBS)}")
    if missing(args.data):
        return 0

    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            run = Path(scratch) / f"repeat{repeat}"
            seconds = repeat_once(args.data, run, jobs, args.epochs, args.image_size)
            for name, value in seconds.items():
                times.setdefault(name, []).append(value)
            listing = ", ".join(f"{name} {value:.1f}s" for name, value in seconds.items())
            print(f"repeat {repeat + 1}: {listing}", flush=True)

    print(f"\n{args.epochs} epochs, image_size {args.image_size}, {args.repeats} repeats (medians)")
    print_table({name: statistics.median(values) for name, values in times.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
