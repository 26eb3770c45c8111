"""The launch CLIs refuse what the training job would refuse, with its reason, before
anything starts; the search space they tune over is one the job accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch.local import cli as local
from launch.options import USAGE_ERROR_STATUS, UsageError, check_hyperparameters
from launch.search_space import OBJECTIVES, SEARCH_SPACE, Choice, FloatRange
from trainer.errors import ClientError
from trainer.hyperparameters import parse_hyperparameters
from trainer.metrics import METRIC_DEFINITIONS


def job_reason(hyperparameters: dict[str, str]) -> str:
    """The one-line reason the training job writes to output/failure for these values."""
    with pytest.raises(ClientError) as refused:
        parse_hyperparameters(hyperparameters)
    return str(refused.value)


@pytest.mark.parametrize(
    ("hyperparameters", "reason"),
    [
        ({"epochs": "ten"}, "hyperparameter epochs='ten' is invalid: expected an integer in "),
        ({"lr": "0"}, "hyperparameter lr='0' is out of range: expected a number in (0, 10]"),
        ({"epoch": "3"}, "unknown hyperparameter 'epoch'; known: amp, "),
        (
            {"amp": "fp8"},
            "hyperparameter amp='fp8' is out of range: expected auto, bf16, fp16 or off",
        ),
    ],
)
def test_the_launcher_refuses_with_the_jobs_own_reason(
    hyperparameters: dict[str, str], reason: str
) -> None:
    with pytest.raises(UsageError) as refused:
        check_hyperparameters(hyperparameters)
    assert str(refused.value) == job_reason(hyperparameters)
    assert str(refused.value).startswith(reason)


def test_values_the_job_accepts_pass() -> None:
    check_hyperparameters({"epochs": "10", "lr": "0.01", "pretrained": "false", "amp": "off"})
    check_hyperparameters({"sagemaker_program": "x", "_tuning_objective_metric": "valid:loss"})


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--hp", "epochs=ten"],
        ["train", "--hp", "batch_size=0"],
        ["train", "--workers-per-host", "65"],
        ["train", "--hp", "epochs"],
        ["tune", "--hp", "dropuot=0.1"],
    ],
)
def test_local_refuses_before_any_job_starts(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_dir = tmp_path / "job"
    code = local.main([*argv, "--data", str(tmp_path / "data"), "--job-dir", str(job_dir)])
    _, err = capsys.readouterr()
    assert code == USAGE_ERROR_STATUS == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not job_dir.exists()  # laid out before `train` starts: nothing was


def test_local_error_is_the_jobs_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = local.main(
        ["train", "--data", str(tmp_path), "--job-dir", str(tmp_path / "j"), "--hp", "lr=fast"]
    )
    assert code == 2
    assert capsys.readouterr().err == f"error: {job_reason({'lr': 'fast'})}\n"


def test_every_value_the_tuners_try_is_one_the_job_accepts() -> None:
    for name, space in SEARCH_SPACE.items():
        if isinstance(space, FloatRange):
            values = [str(space.low), str(space.high)]
        else:
            assert isinstance(space, Choice)
            values = [str(value) for value in space.values]
        for value in values:
            check_hyperparameters({name: value})


def test_every_objective_is_a_metric_the_job_prints() -> None:
    names = {definition["Name"] for definition in METRIC_DEFINITIONS}
    assert {objective.metric for objective in OBJECTIVES.values()} <= names
    assert OBJECTIVES["valid_accuracy"].metric == "valid:accuracy"
