import re

from launch.search_space import OBJECTIVES, Objective
from trainer.metrics import METRIC_DEFINITIONS, format_metrics, parse_metrics


def test_epoch_line_is_stable() -> None:
    line = format_metrics({"train_loss": 0.21, "valid_loss": 0.18, "valid_accuracy": 0.94}, epoch=3)
    assert line == "epoch=3 train_loss=0.2100 valid_loss=0.1800 valid_accuracy=0.9400"


def test_each_regex_reads_its_own_value_and_no_other() -> None:
    log = "\n".join(
        [
            format_metrics(
                {
                    "train_loss": 0.5,
                    "train_accuracy": 0.6,
                    "valid_loss": 0.7,
                    "valid_accuracy": 0.8,
                    "valid_macro_f1": 0.45,
                },
                epoch=1,
            ),
            format_metrics({"test_loss": 0.25, "test_accuracy": 0.75, "test_macro_f1": 0.35}),
        ]
    )
    assert parse_metrics(log) == {
        "train:loss": [0.5],
        "train:accuracy": [0.6],
        "valid:loss": [0.7],
        "valid:accuracy": [0.8],
        "valid:macro_f1": [0.45],
        "test:loss": [0.25],
        "test:accuracy": [0.75],
        "test:macro_f1": [0.35],
    }


def test_regexes_have_one_group_and_read_nan() -> None:
    for definition in METRIC_DEFINITIONS:
        assert re.compile(definition["Regex"]).groups == 1
    assert parse_metrics("epoch=1 train_loss=nan")["train:loss"] != []


def test_every_tuning_objective_is_a_metric_the_job_prints() -> None:
    names = {definition["Name"] for definition in METRIC_DEFINITIONS}
    assert {objective.metric for objective in OBJECTIVES.values()} <= names
    assert OBJECTIVES["valid_macro_f1"] == Objective("valid:macro_f1", "Maximize")
