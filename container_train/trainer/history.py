"""The job's metric history, as output data: `metrics.json` and the loss and accuracy curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_history(output_dir: Path, history: list[dict[str, Any]]) -> None:
    """Per-epoch metrics as JSON and a PNG of the loss and accuracy curves."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(history, indent=2))
    plot_history(history, output_dir / "training_curves.png")


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only needed at the end of a job

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "valid"):
        loss_axis.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
        accuracy_axis.plot(
            epochs, [row[f"{split}_accuracy"] for row in history], marker="o", label=split
        )
    loss_axis.set(title="cross-entropy loss", xlabel="epoch")
    accuracy_axis.set(title="accuracy", xlabel="epoch", ylim=(0, 1.05))
    for axis in (loss_axis, accuracy_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
