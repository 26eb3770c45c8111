"""The evaluation report from labels and probabilities: counts checked by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.evaluation import (
    EVALUATION_FILE,
    MISTAKES_FILE,
    calibration_error,
    evaluate_predictions,
    format_class_table,
    macro_f1,
    write_evaluation,
)
from trainer.evaluation_plots import (
    DPI,
    MAX_SHOWN_MISTAKES,
    MISTAKE_CELL,
    MISTAKE_PADDING,
    THUMBNAIL_PIXELS,
    TITLE_PIXELS,
    confusion_figure_inches,
    mistakes_image_size,
    plot_confusion_matrix,
    plot_mistakes,
)
from trainer.scalars import Scalars

CLASSES = ("ant", "bee", "cicada")
# An imbalanced test set: 6 ants, 3 bees, 1 cicada; the model never predicts "cicada".
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
PREDICTED = [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
CONFIDENCE = [0.9, 0.8, 0.7, 0.6, 0.9, 0.55, 0.8, 0.7, 0.95, 0.6]
FILES = [f"{CLASSES[label]}/{index:02d}.jpg" for index, label in enumerate(LABELS)]


def probabilities_of(predicted: list[int], confidence: list[float], classes: int) -> np.ndarray:
    """Rows whose top class is `predicted` with probability `confidence`, the rest spread."""
    rows = np.zeros((len(predicted), classes))
    for row, (top, share) in enumerate(zip(predicted, confidence, strict=True)):
        rows[row] = (1 - share) / (classes - 1)
        rows[row, top] = share
    return rows


def three_classes() -> dict:
    probabilities = probabilities_of(PREDICTED, CONFIDENCE, len(CLASSES))
    return evaluate_predictions("test", LABELS, probabilities, CLASSES, FILES).to_dict()


def test_a_class_never_predicted_has_recall_zero_and_the_table_matches_a_hand_count() -> None:
    report = three_classes()
    # By hand: ant row [5, 1, 0], bee row [1, 2, 0], cicada row [1, 0, 0].
    assert report["confusion_matrix"]["counts"] == [[5, 1, 0], [1, 2, 0], [1, 0, 0]]
    assert report["confusion_matrix"]["classes"] == list(CLASSES)
    ant, bee, cicada = report["per_class"]
    # ant: 5 of 7 predicted ants are ants, 5 of 6 ants found; F1 = 2TP / (2TP + FP + FN).
    assert ant == pytest.approx(
        {"class": "ant", "precision": 5 / 7, "recall": 5 / 6, "f1": 10 / 13, "support": 6}
    )
    assert bee == pytest.approx(
        {"class": "bee", "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert cicada == {"class": "cicada", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro_avg"]["f1"] == pytest.approx((10 / 13 + 2 / 3 + 0) / 3)
    assert report["macro_avg"]["recall"] == pytest.approx((5 / 6 + 2 / 3 + 0) / 3)
    assert report["weighted_avg"]["f1"] == pytest.approx((6 * 10 / 13 + 3 * 2 / 3) / 10)
    assert report["accuracy"] == pytest.approx(0.7)
    assert report["items"] == 10
    assert report["mistakes"] == 3
    # Accuracy 0.7 hides the cicada; the macro F1 of the metric line does not.
    assert macro_f1(LABELS, np.array(PREDICTED)) == pytest.approx(report["macro_avg"]["f1"])


def test_the_printed_table_has_one_row_per_class_and_the_averages() -> None:
    table = format_class_table(three_classes()).splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in table[2:5]}
    assert rows == {
        "ant": ["0.7143", "0.8333", "0.7692", "6"],
        "bee": ["0.6667", "0.6667", "0.6667", "3"],
        "cicada": ["0.0000", "0.0000", "0.0000", "1"],
    }
    assert table[5].split()[-1] == "10" and table[5].startswith("macro avg")
    assert table[6].startswith("weighted avg")
    assert table[7].startswith("accuracy 0.7000, top-3 accuracy 1.0000")


def test_a_class_absent_from_the_channel_has_support_zero_and_no_recall() -> None:
    labels = np.array([0, 0, 1, 1])
    probabilities = probabilities_of([0, 2, 1, 1], [0.9, 0.6, 0.8, 0.7], 3)
    report = evaluate_predictions("valid", labels, probabilities, CLASSES, FILES[:4]).to_dict()
    cicada = report["per_class"][2]
    # Predicted once, never right, never present: precision 0, nothing to recall.
    assert cicada == {"class": "cicada", "precision": 0.0, "recall": None, "f1": None, "support": 0}
    # The macro average is over the classes the channel has: ant F1 2/3, bee F1 1.
    assert report["macro_avg"]["f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert "cicada        0.0000     -       -       0" in format_class_table(report)


def test_top_k_counts_the_true_class_among_the_k_most_probable() -> None:
    six = tuple("abcdef")
    # Item 0: true class ranked 2nd; item 1: true class ranked last (6th of 6).
    probabilities = np.array(
        [[0.5, 0.3, 0.1, 0.05, 0.03, 0.02], [0.3, 0.25, 0.2, 0.15, 0.09, 0.01]]
    )
    report = evaluate_predictions("test", np.array([1, 5]), probabilities, six, ["x", "y"])
    assert report.top_k == 5
    assert report.top_k_accuracy == 0.5
    assert report.accuracy == 0.0


def test_calibration_error_weighs_each_bins_gap_by_its_share() -> None:
    # Bin (0.9, 1]: confidence 0.95, accuracy 1/2; bin (0.6, 0.7]: 0.65, accuracy 1.
    confidence = np.array([0.95, 0.95, 0.65, 0.65])
    correct = np.array([True, False, True, True])
    assert calibration_error(confidence, correct) == pytest.approx(0.45 * 0.5 + 0.35 * 0.5)
    assert calibration_error(np.array([1.0, 0.0]), np.array([True, False])) == pytest.approx(0.0)


def test_mistakes_csv_holds_every_wrong_prediction_most_confident_first(tmp_path: Path) -> None:
    probabilities = probabilities_of(PREDICTED, CONFIDENCE, len(CLASSES))
    evaluation = evaluate_predictions("test", LABELS, probabilities, CLASSES, FILES)
    write_evaluation(evaluation, tmp_path)
    with (tmp_path / MISTAKES_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    wrong = [
        (FILES[i], CLASSES[LABELS[i]], CLASSES[PREDICTED[i]], CONFIDENCE[i])
        for i in range(len(LABELS))
        if LABELS[i] != PREDICTED[i]
    ]
    expected = sorted(wrong, key=lambda row: -row[3])
    assert [(r["file"], r["true"], r["predicted"], float(r["probability"])) for r in rows] == [
        pytest.approx(row) for row in expected
    ]
    assert json.loads((tmp_path / EVALUATION_FILE).read_text()) == json.loads(
        json.dumps(evaluation.to_dict())
    )


def test_inconsistent_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="do not describe the same items"):
        evaluate_predictions("test", LABELS, np.zeros((10, 2)), CLASSES, FILES)


def _pixels(inches: tuple[float, float]) -> tuple[int, int]:
    return round(inches[0] * DPI), round(inches[1] * DPI)


@pytest.mark.parametrize("classes", [2, 3, 50])
def test_the_confusion_matrix_png_opens_at_its_size(classes: int, tmp_path: Path) -> None:
    names = tuple(f"class-{index}-with-a-long-name" for index in range(classes))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, 400)
    probabilities = rng.dirichlet(np.ones(classes), 400)
    evaluation = evaluate_predictions(
        "test", labels, probabilities, names, [f"{i}.jpg" for i in range(400)]
    )
    path = tmp_path / "confusion.png"
    plot_confusion_matrix(evaluation, path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == _pixels(confusion_figure_inches(classes))
        # Not a blank canvas: the cells are coloured.
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 20


def test_the_mistakes_png_shows_at_most_36_captioned_thumbnails(tmp_path: Path) -> None:
    wrong = 40
    labels = np.zeros(wrong, dtype=np.int64)
    probabilities = probabilities_of([1] * wrong, list(np.linspace(0.51, 0.99, wrong)), 2)
    evaluation = evaluate_predictions(
        "test", labels, probabilities, ("cat", "dog"), [f"cat/{i}.jpg" for i in range(wrong)]
    )
    assert len(evaluation.mistakes) == wrong
    assert evaluation.mistakes[0].probability == pytest.approx(0.99)
    # Thumbnail i is a flat grey of level i * 6: the pixels show which were drawn where.
    thumbnails = [np.full((64, 64, 3), i * 6, dtype=np.uint8) for i in range(wrong)]
    path = tmp_path / "mistakes.png"
    plot_mistakes(evaluation.mistakes, thumbnails, "test", path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == mistakes_image_size(MAX_SHOWN_MISTAKES)
        assert image.size == (6 * MISTAKE_CELL[0], TITLE_PIXELS + 6 * MISTAKE_CELL[1])
        rgb = image.convert("RGB")
        centres = [
            rgb.getpixel(
                (
                    column * MISTAKE_CELL[0] + MISTAKE_PADDING + THUMBNAIL_PIXELS // 2,
                    TITLE_PIXELS + row * MISTAKE_CELL[1] + THUMBNAIL_PIXELS // 2,
                )
            )
            for row in range(6)
            for column in range(6)
        ]
    assert centres == [(i * 6,) * 3 for i in range(MAX_SHOWN_MISTAKES)]
    plot_mistakes((), (), "test", tmp_path / "none.png")
    with Image.open(tmp_path / "none.png") as image:
        assert image.size == mistakes_image_size(0)


def test_tensorboard_reads_the_confusion_matrix_image_and_per_class_scalars(
    tmp_path: Path,
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import (  # noqa: PLC0415
        EventAccumulator,
    )

    probabilities = probabilities_of(PREDICTED, CONFIDENCE, len(CLASSES))
    evaluation = evaluate_predictions("test", LABELS, probabilities, CLASSES, FILES)
    png = tmp_path / "confusion.png"
    plot_confusion_matrix(evaluation, png)
    scalars = Scalars(tmp_path / "tb")
    scalars.add_image(3, "test/confusion_matrix", png.read_bytes())
    scalars.add(3, {f"test_f1/{row['class']}": row["f1"] for row in evaluation.per_class()})
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["test/confusion_matrix"]
    (image,) = events.Images("test/confusion_matrix")
    assert (image.step, image.width, image.height) == (3, *_pixels(confusion_figure_inches(3)))
    assert image.encoded_image_string == png.read_bytes()
    assert events.Scalars("test_f1/cicada")[0].value == 0.0
    assert events.Scalars("test_f1/ant")[0].value == pytest.approx(10 / 13)
    with pytest.raises(ValueError, match="not a PNG"):
        scalars.add_image(3, "x", b"GIF89a")
