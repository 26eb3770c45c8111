"""A job's end-of-job evaluation as the launch tools print it: where its files are, and the
per-class table (the same for `local.py train`, `cloud.py report` and `make demo`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from trainer.evaluation import EVALUATION_FILE, OUTPUT_FILES, format_class_table


def job_files(output_dir: Path) -> dict[str, Path]:
    """The evaluation files a job left in its output data folder, by name."""
    return {name: output_dir / name for name in OUTPUT_FILES if (output_dir / name).is_file()}


def print_evaluation(files: Mapping[str, Path]) -> None:
    """The files' paths and the per-class table of their evaluation.json."""
    if EVALUATION_FILE not in files:
        print("evaluation: none found (the job did not finish, or predates the evaluation)")
        return
    print("evaluation: " + ", ".join(str(path) for path in files.values()))
    print(format_class_table(json.loads(files[EVALUATION_FILE].read_text())))
