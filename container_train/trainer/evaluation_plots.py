"""The evaluation's pictures: the confusion matrix (matplotlib) and a grid of the most
confident mistakes (Pillow).

matplotlib (Agg) is imported when the matrix is drawn, at the end of a job: importing it
takes about a second, a tenth of a tuning trial that finds its features cached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from trainer.evaluation import Evaluation, Mistake

DPI = 100
MAX_SHOWN_MISTAKES = 36
MISTAKE_COLUMNS = 6
THUMBNAIL_PIXELS = 180
CAPTION_POINTS, CAPTION_LINE_PIXELS = 13, 16
TITLE_POINTS, TITLE_PIXELS = 18, 36
MISTAKE_PADDING = 8
# A thumbnail, its three caption lines and the padding around them.
MISTAKE_CELL = (
    THUMBNAIL_PIXELS + 2 * MISTAKE_PADDING,
    THUMBNAIL_PIXELS + 3 * CAPTION_LINE_PIXELS + 2 * MISTAKE_PADDING,
)
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


def mistakes_image_size(shown: int) -> tuple[int, int]:
    """Pixels: up to 6 columns of cells, as many rows as needed, the title above; at least
    3 cells wide, so that the title fits."""
    columns = max(3, min(MISTAKE_COLUMNS, shown))
    rows = max(1, math.ceil(shown / MISTAKE_COLUMNS))
    return columns * MISTAKE_CELL[0], TITLE_PIXELS + rows * MISTAKE_CELL[1]


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
    its file, true class, predicted class and the predicted class's probability.

    Composed with Pillow: a 36-panel matplotlib figure takes seconds to lay out."""
    shown = list(zip(mistakes, thumbnails, strict=True))[:MAX_SHOWN_MISTAKES]
    canvas = Image.new("RGB", mistakes_image_size(len(shown)), "white")
    draw = ImageDraw.Draw(canvas)
    title = f"{channel}: the {len(shown)} most confident wrong predictions"
    draw.text(
        (MISTAKE_PADDING, MISTAKE_PADDING),
        title if shown else f"{channel}: no wrong predictions",
        fill="black",
        font=_font(TITLE_POINTS),
    )
    font = _font(CAPTION_POINTS)
    for number, (mistake, thumbnail) in enumerate(shown):
        row, column = divmod(number, MISTAKE_COLUMNS)
        left = column * MISTAKE_CELL[0] + MISTAKE_PADDING
        top = TITLE_PIXELS + row * MISTAKE_CELL[1]
        image = ImageOps.contain(Image.fromarray(thumbnail), (THUMBNAIL_PIXELS,) * 2)
        canvas.paste(image, (left, top))
        caption = (
            mistake.file,
            f"true: {mistake.true}",
            f"predicted: {mistake.predicted} ({mistake.probability:.2f})",
        )
        for line, text in enumerate(caption):
            position = (left, top + THUMBNAIL_PIXELS + 2 + line * CAPTION_LINE_PIXELS)
            draw.text(position, _fitted(text, font, THUMBNAIL_PIXELS), fill="black", font=font)
    canvas.save(path, format="PNG")


def _font(points: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=points)


def _fitted(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, pixels: int) -> str:
    """`text`, shortened from the left (file names differ at their end) to fit `pixels`."""
    if font.getlength(text) <= pixels:
        return text
    while text and font.getlength("…" + text) > pixels:
        text = text[1:]
    return "…" + text
