"""The real photo set the benchmarks run on: ../shared/data/catsdogs unless CATSDOGS_DIR
or --data names another train/valid/test ImageFolder set."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "catsdogs"


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("CATSDOGS_DIR", DEFAULT_DATA)),
        help="train/valid/test ImageFolders (default: $CATSDOGS_DIR or ../shared/data/catsdogs)",
    )


def missing(data: Path) -> bool:
    """True (after saying so) when there is no train channel at `data`: the bench skips."""
    if (data / "train").is_dir():
        return False
    print(f"skipped: no data set at {data} (set CATSDOGS_DIR or --data)")
    return True
