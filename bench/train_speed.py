"""Training speed: the textbook loop against this project's path, measured in the same run.

    python bench/train_speed.py [--data DIR] [--repeats 3] [--image-size 224] [--epochs 5]
                                [--jobs textbook,cache_off,project,tuning]

Every job runs as its own process on the real photos, timed from start to exit as a
user waits for it (random weights: speed only, not accuracy). Per repeat:
  - textbook:  bench/textbook_loop.py, the tutorial loop: the backbone runs on every
               image in every epoch;
  - cache_off: the real `train` command with feature_cache=off and amp=off: this
               project's backbone and pipeline, but recomputed every epoch like the
               textbook (the cache's share of the speed-up);
  - project:   the real `train` command with its defaults: features computed once;
  - tuning:    three `train` trials with different lr sharing one feature cache, as
               `local.py tune` runs them: the cost of the 2nd and 3rd against the 1st.
Prints each repeat, then the medians and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from photos import add_data_argument, missing

from launch.local.tuning import run_trial

JOBS = ("textbook", "cache_off", "project", "tuning")


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
    return seconds


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
        "--jobs", default=",".join(JOBS), help=f"which to time (default: {','.join(JOBS)})"
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
