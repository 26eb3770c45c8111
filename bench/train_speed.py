"""Training speed: the textbook loop against this project's path, measured in the same run.

    python bench/train_speed.py [--data DIR] [--repeats 3] [--image-size 224] [--epochs 5]

Every job is the real `train` command on the real photos (random weights: speed
only, not accuracy). Per repeat:
  - textbook: feature_cache=off, amp=off: decode and run the backbone on every image
    in every epoch;
  - project:  the defaults: backbone features computed once, the head trained on them;
  - tuning:   three trials with different lr sharing one feature cache, as
    `local.py tune` runs them: the cost of the 2nd and 3rd relative to the 1st.
Prints medians over the repeats and the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

sys.path.insert(0, str(REPO_ROOT / "container_train"))

from tuning import run_trial  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "catsdogs"


def timed_job(
    data: Path, job_dir: Path, hyperparameters: dict[str, str], cache: Path | None
) -> float:
    """Wall time of one `train` process, run as local tuning runs its trials."""
    started = time.perf_counter()
    exit_code, log = run_trial(data, job_dir, cache, hyperparameters)
    seconds = time.perf_counter() - started
    if exit_code != 0:
        sys.exit(f"job in {job_dir} failed:\n{log[-3000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("CATSDOGS_DIR", DEFAULT_DATA)),
        help="train/valid/test ImageFolders (default: ../shared/data/catsdogs)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default: 3)")
    parser.add_argument("--image-size", type=int, default=224, help="(default: 224)")
    parser.add_argument("--epochs", type=int, default=5, help="(default: 5)")
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        print(f"skipped: no data set at {args.data} (set CATSDOGS_DIR or --data)")
        return 0

    base = {"pretrained": "false", "epochs": str(args.epochs), "image_size": str(args.image_size)}
    textbook = {**base, "feature_cache": "off", "amp": "off"}
    times: dict[str, list[float]] = {
        "textbook": [],
        "project": [],
        "trial1": [],
        "trial2": [],
        "trial3": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for repeat in range(args.repeats):
            run = root / f"repeat{repeat}"
            times["textbook"].append(timed_job(args.data, run / "textbook", textbook, None))
            times["project"].append(timed_job(args.data, run / "project", base, None))
            cache = run / "shared_cache"
            cache.mkdir(parents=True)
            for trial, lr in enumerate(("0.001", "0.0003", "0.003"), start=1):
                job = run / f"trial{trial}"
                times[f"trial{trial}"].append(timed_job(args.data, job, {**base, "lr": lr}, cache))
            print(
                f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()),
                flush=True,
            )

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{args.epochs} epochs, image_size {args.image_size}, {args.repeats} repeats (medians)")
    print("| job | seconds | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| textbook loop (backbone every epoch) | {median['textbook']:.1f} | 1.00 |")
    print(
        f"| this project (feature cache) | {median['project']:.1f} | "
        f"{median['textbook'] / median['project']:.2f}x faster |"
    )
    for trial in ("trial1", "trial2", "trial3"):
        print(
            f"| tuning {trial} (shared cache) | {median[trial]:.1f} | "
            f"{median[trial] / median['trial1']:.0%} of trial 1 |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
