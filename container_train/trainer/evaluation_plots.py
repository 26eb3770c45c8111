"""The evaluation's pictures: the confusion matrix and a grid of the most confident mistakes.

matplotlib (Agg) is imported when a picture is drawn, at the end of a job: importing it
takes about a second, a tenth of a tuning trial that finds its features cached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.evaluation import Evaluation, Mistake

DPI = 100
MAX_SHOWN_MISTAKES = 36
MISTAKE_COLUMNS = 6
MISTAKE_CELL_INCHES = (2.4, 2.9)  # width, height of one thumbnail and its caption
TITLE_INCHES = 0.4
# Cells carry "count / share" up to this many classes, the count alone above it.
ANNOTATED_SHARES_UP_TO = 15
LABEL_CHARACTERS = 24  # longer class names are shortened on the axes


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415 - only needed at the end of a job (see the docstring)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def confusion_figure_inches(classes: int) -> tuple[float, float]:
    """Square-ish and growing with the classes: 2 classes fit 6 in, 50 classes get 0.5 in a cell."""
    side = min(max(6.0, 0.5 * classes + 3.0), 28.0)
    return side + 1.5, side  # the colour bar takes the extra width


def mistakes_figure_inches(shown: int) -> tuple[float, float]:
    columns = max(1, min(MISTAKE_COLUMNS, shown))
    rows = max(1, math.ceil(shown / columns))
    return columns * MISTAKE_CELL_INCHES[0], rows * MISTAKE_CELL_INCHES[1] + TITLE_INCHES


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARACTERS else name[: LABEL_CHARACTERS - 1] + "…"


def plot_confusion_matrix(evaluation: Evaluation, path: Path) -> None:
    """Counts in the cells, coloured by the row-normalised share (recall on the diagonal)."""
    plt = _pyplot()
    counts = evaluation.confusion
    classes = len(evaluation.classes)
    support = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    figure, axis = plt.subplots(figsize=confusion_figure_inches(classes), dpi=DPI)
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    names = [_short(name) for name in evaluation.classes]
    font = 10 if classes <= ANNOTATED_SHARES_UP_TO else 7
    axis.set_xticks(range(classes), names, rotation=45 if classes <= 10 else 90, ha="right")
    axis.set_yticks(range(classes), names)
    axis.tick_params(labelsize=font)
    axis.set(xlabel="predicted class", ylabel="true class")
    axis.set_title(
        f"{evaluation.channel}: {int(counts.sum())} images, accuracy {evaluation.accuracy:.3f}"
    )
    for row in range(classes):
        for column in range(classes):
            count = int(counts[row, column])
            if classes > ANNOTATED_SHARES_UP_TO and count == 0:
                continue  # 2,500 zeros would hide the few cells that matter
            text = str(count)
            if classes <= ANNOTATED_SHARES_UP_TO:
                text += f"\n{shares[row, column]:.0%}"
            colour = "white" if shares[row, column] > 0.5 else "black"
            axis.text(column, row, text, ha="center", va="center", fontsize=font, color=colour)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def plot_mistakes(
    mistakes: Sequence[Mistake], thumbnails: Sequence[np.ndarray], channel: str, path: Path
) -> None:
    """The given mistakes (at most 36) as thumbnails (H x W x 3 uint8), each captioned with
    its file, true class, predicted class and the predicted class's probability."""
    plt = _pyplot()
    shown = list(zip(mistakes, thumbnails, strict=True))[:MAX_SHOWN_MISTAKES]
    columns = max(1, min(MISTAKE_COLUMNS, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    inches = mistakes_figure_inches(len(shown))
    figure, axes = plt.subplots(
        rows, columns, figsize=inches, dpi=DPI, squeeze=False, layout="constrained"
    )
    for axis in axes.flat:
        axis.axis("off")
    for axis, (mistake, thumbnail) in zip(axes.flat, shown, strict=False):
        axis.imshow(thumbnail)
        axis.set_title(
            f"{_short(mistake.file)}\ntrue: {_short(mistake.true)}\n"
            f"predicted: {_short(mistake.predicted)} ({mistake.probability:.2f})",
            fontsize=8,
        )
    title = f"{channel}: the {len(shown)} most confident wrong predictions"
    if not shown:
        title = f"{channel}: no wrong predictions"
    figure.suptitle(title)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
