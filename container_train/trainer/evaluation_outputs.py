"""The end-of-job evaluation: the best epoch's predictions on one channel, as files to act on.

Into output/data: evaluation.json and mistakes.csv (trainer.evaluation), the confusion
matrix and the most confident mistakes as PNGs (trainer.evaluation_plots); into the
TensorBoard event file, when the job writes one, the confusion matrix as an image and
each class's F1. The predictions come from the pass that computed the channel's metrics
(cached features for the head): only the shown mistakes' images are decoded again, for
their thumbnails, through the model's own eval preprocessing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model_artifact.preprocessing import Preprocessing, eval_transform, open_rgb
from trainer.data import UNREADABLE, Channel
from trainer.engine import Predictions
from trainer.evaluation import (
    CONFUSION_MATRIX_PLOT,
    MISTAKES_PLOT,
    Evaluation,
    evaluate_predictions,
    write_evaluation,
)
from trainer.evaluation_plots import MAX_SHOWN_MISTAKES, plot_confusion_matrix, plot_mistakes
from trainer.scalars import Scalars

log = logging.getLogger(__name__)


def evaluation_of(channel: Channel, predictions: Predictions) -> Evaluation:
    """The report of a pass's predictions (in channel order; unreadable items left out)."""
    readable = predictions.labels != UNREADABLE
    probabilities = torch.softmax(predictions.logits[readable].double(), dim=1).numpy()
    files = [
        channel.samples[index][0].relative_to(channel.root).as_posix()
        for index in torch.nonzero(readable)[:, 0].tolist()
    ]
    return evaluate_predictions(
        channel.name, predictions.labels[readable].numpy(), probabilities, channel.classes, files
    )


def thumbnail_reader(preprocessing: Preprocessing) -> Callable[[Path], np.ndarray]:
    """An image as the model saw it (the eval resize and crop), un-normalised for display."""
    transform = eval_transform(preprocessing)
    mean = torch.tensor(preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(preprocessing.std).view(3, 1, 1)

    def read(path: Path) -> np.ndarray:
        pixels = (transform(open_rgb(path)) * std + mean).clamp(0, 1)
        return (pixels * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    return read


def write_outputs(
    channel: Channel,
    predictions: Predictions,
    preprocessing: Preprocessing,
    output_dir: Path,
    scalars: Scalars | None,
    step: int,
) -> Evaluation:
    """Evaluate `predictions` of `channel` and write the report's files (and TensorBoard's)."""
    started = time.monotonic()
    evaluation = evaluation_of(channel, predictions)
    write_evaluation(evaluation, output_dir)
    plot_confusion_matrix(evaluation, output_dir / CONFUSION_MATRIX_PLOT)
    shown = evaluation.mistakes[:MAX_SHOWN_MISTAKES]
    read = thumbnail_reader(preprocessing)
    thumbnails = [read(channel.root / mistake.file) for mistake in shown]
    plot_mistakes(shown, thumbnails, channel.name, output_dir / MISTAKES_PLOT)
    if scalars is not None:
        tag = channel.name
        png = (output_dir / CONFUSION_MATRIX_PLOT).read_bytes()
        scalars.add_image(step, f"{tag}/confusion_matrix", png)
        f1 = {f"{tag}_f1/{row['class']}": row["f1"] for row in evaluation.per_class()}
        scalars.add(step, {name: value for name, value in f1.items() if value is not None})
    log.info(
        "evaluation of %s: %d images, %d wrong, macro F1 %.4f; report in %s (%.2f s)",
        channel.name,
        evaluation.confusion.sum(),
        len(evaluation.mistakes),
        evaluation.macro_f1(),
        output_dir,
        time.monotonic() - started,
    )
    return evaluation
