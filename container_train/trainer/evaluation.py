"""What a trained classifier gets right and wrong on one channel, from its predictions alone.

Pure numpy over (true labels, predicted probabilities, class names, file names): no torch,
so the launch tools read the same report the job writes. Accuracy alone hides a class the
model never predicts when classes are imbalanced; the per-class precision, recall and F1,
the confusion matrix, the calibration error and the list of confident mistakes answer
what an engineer asks next.

Conventions (scikit-learn's `classification_report` with `zero_division=0` where it has
one): precision of a class never predicted is 0; a class the channel lacks has support 0
and no recall or F1 (null: there is nothing to judge), and the macro average is over the
classes the channel has, so a test set without a class is not scored as if the model had
failed on it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EVALUATION_FILE = "evaluation.json"
MISTAKES_FILE = "mistakes.csv"
CONFUSION_MATRIX_PLOT = "confusion_matrix.png"
MISTAKES_PLOT = "mistakes.png"
# What the end-of-job evaluation writes into output/data (the launch tools fetch these).
OUTPUT_FILES = (EVALUATION_FILE, CONFUSION_MATRIX_PLOT, MISTAKES_PLOT, MISTAKES_FILE)

CALIBRATION_BINS = 10
TOP_K = 5  # top-k accuracy with k = min(TOP_K, classes)
MISTAKES_FIELDS = ("file", "true", "predicted", "probability")


@dataclass(frozen=True)
class Mistake:
    file: str  # relative to the channel's root, e.g. "cat/0017.jpg"
    true: str
    predicted: str
    probability: float  # of the predicted class


@dataclass(frozen=True)
class Evaluation:
    """The report of one channel; `to_dict` is evaluation.json."""

    channel: str
    classes: tuple[str, ...]
    confusion: np.ndarray  # (classes, classes) counts; rows true, columns predicted
    accuracy: float
    top_k: int
    top_k_accuracy: float
    calibration_error: float
    mistakes: tuple[Mistake, ...]  # most confident first

    @property
    def support(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    def per_class(self) -> list[dict[str, Any]]:
        return [
            {"class": name, **scores}
            for name, scores in zip(self.classes, class_scores(self.confusion), strict=True)
        ]

    def macro_f1(self) -> float:
        return macro_f1_of(self.confusion)

    def to_dict(self) -> dict[str, Any]:
        per_class = self.per_class()
        return {
            "channel": self.channel,
            "items": int(self.confusion.sum()),
            "classes": list(self.classes),
            "per_class": per_class,
            "macro_avg": _average(per_class, weighted=False),
            "weighted_avg": _average(per_class, weighted=True),
            "accuracy": self.accuracy,
            "top_k": {"k": self.top_k, "accuracy": self.top_k_accuracy},
            "confusion_matrix": {
                "classes": list(self.classes),
                "rows": "true class",
                "columns": "predicted class",
                "counts": self.confusion.tolist(),
            },
            "calibration": {"ece": self.calibration_error, "bins": CALIBRATION_BINS},
            "mistakes": len(self.mistakes),
        }


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs: rows are true classes, columns predictions."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def class_scores(confusion: np.ndarray) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of each class (None where the channel lacks it)."""
    true_positives = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    scores = []
    for tp, n_predicted, n_true in zip(true_positives, predicted, support, strict=True):
        precision = float(tp / n_predicted) if n_predicted else 0.0
        recall = float(tp / n_true) if n_true else None
        f1 = None
        if recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append({"precision": precision, "recall": recall, "f1": f1, "support": int(n_true)})
    return scores


def macro_f1_of(confusion: np.ndarray) -> float:
    """The mean F1 of the classes present (nan when none is)."""
    values = [s["f1"] for s in class_scores(confusion) if s["f1"] is not None]
    return float(np.mean(values)) if values else math.nan


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Macro F1 over the classes present in `labels`: the per-epoch metric line's value."""
    classes = int(max(labels.max(initial=-1), predicted.max(initial=-1))) + 1
    return macro_f1_of(confusion_matrix(labels, predicted, classes))


def _average(per_class: list[dict[str, Any]], weighted: bool) -> dict[str, float | None]:
    present = [row for row in per_class if row["support"]]
    if not present:
        return {"precision": None, "recall": None, "f1": None}
    weights = [row["support"] if weighted else 1 for row in present]
    return {
        key: float(np.average([row[key] for row in present], weights=weights))
        for key in ("precision", "recall", "f1")
    }


def calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Expected calibration error: |accuracy - mean confidence| per equal-width confidence
    bin, weighted by the bin's share of the items (Guo et al., 2017)."""
    if len(confidence) == 0:
        return math.nan
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of 0 joins the first.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    error = 0.0
    for bin_index in range(bins):
        members = index == bin_index
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            error += gap * members.mean()
    return float(error)


def evaluate_predictions(
    channel: str,
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    files: Sequence[str],
) -> Evaluation:
    """The report of `probabilities` (items x classes) against `labels`, item i being `files[i]`."""
    if probabilities.shape != (len(labels), len(classes)) or len(files) != len(labels):
        raise ValueError(
            f"{len(labels)} labels, {len(files)} files and probabilities of shape "
            f"{probabilities.shape} do not describe the same items of {len(classes)} classes"
        )
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1, initial=0.0)
    correct = predicted == labels
    k = min(TOP_K, len(classes))
    top_k = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    wrong = np.flatnonzero(~correct)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    return Evaluation(
        channel=channel,
        classes=tuple(classes),
        confusion=confusion_matrix(labels, predicted, len(classes)),
        accuracy=float(correct.mean()) if len(labels) else math.nan,
        top_k=k,
        top_k_accuracy=float((top_k == labels[:, None]).any(axis=1).mean())
        if len(labels)
        else math.nan,
        calibration_error=calibration_error(confidence, correct),
        mistakes=tuple(
            Mistake(files[i], classes[labels[i]], classes[predicted[i]], float(confidence[i]))
            for i in wrong
        ),
    )


def write_evaluation(evaluation: Evaluation, output_dir: Path) -> None:
    """evaluation.json and mistakes.csv (every wrong prediction, most confident first)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / EVALUATION_FILE).write_text(json.dumps(evaluation.to_dict(), indent=2))
    with (output_dir / MISTAKES_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MISTAKES_FIELDS)
        for mistake in evaluation.mistakes:
            writer.writerow(
                [mistake.file, mistake.true, mistake.predicted, f"{mistake.probability:.4f}"]
            )


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_class_table(report: dict[str, Any]) -> str:
    """The per-class table of an evaluation.json, as the reports print it."""
    width = max(12, *(len(row["class"]) for row in report["per_class"]))
    header = f"{'class':{width}}  precision  recall  f1      support"
    lines = [f"evaluation of {report['channel']} ({report['items']} images)", header]
    rows = [(row["class"], row, row["support"]) for row in report["per_class"]]
    total = report["items"]
    rows += [
        ("macro avg", report["macro_avg"], total),
        ("weighted avg", report["weighted_avg"], total),
    ]
    for name, scores, support in rows:
        lines.append(
            f"{name:{width}}  {_cell(scores['precision']):9}  {_cell(scores['recall']):6}  "
            f"{_cell(scores['f1']):6}  {support}"
        )
    top_k = report["top_k"]
    lines.append(
        f"accuracy {report['accuracy']:.4f}, top-{top_k['k']} accuracy {top_k['accuracy']:.4f}, "
        f"calibration error (ECE, {report['calibration']['bins']} bins) "
        f"{report['calibration']['ece']:.4f}, {report['mistakes']} wrong predictions"
    )
    return "\n".join(lines)


def read_evaluation(output_dir: Path) -> dict[str, Any] | None:
    """A job's evaluation.json, or None where the job wrote none."""
    path = output_dir / EVALUATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None
