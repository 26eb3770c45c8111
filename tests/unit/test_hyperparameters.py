import pytest

from trainer.errors import ClientError
from trainer.hyperparameters import (
    Hyperparameters,
    parse_hyperparameters,
    trajectory_settings,
)


def test_defaults_match_the_documented_ones() -> None:
    hp = parse_hyperparameters({})
    assert (hp.lr, hp.eps, hp.weight_decay, hp.batch_size, hp.epochs) == (1e-3, 1e-8, 0.01, 64, 5)
    assert (hp.hidden_units, hp.dropout, hp.image_size, hp.pretrained) == (256, 0.2, 224, True)
    assert hp.num_workers >= 1


def test_string_values_as_sagemaker_sends_them() -> None:
    hp = parse_hyperparameters(
        {"lr": "0.01", "eps": "1e-9", "batch_size": "128", "pretrained": "False", "dropout": "0"}
    )
    assert hp == Hyperparameters(
        lr=0.01, eps=1e-9, batch_size=128, pretrained=False, dropout=0.0, num_workers=hp.num_workers
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("True", True), ("true", True), ("1", True), ("false", False), ("FALSE", False)],
)
def test_booleans_parse_whatever_their_case(raw: str, expected: bool) -> None:
    assert parse_hyperparameters({"pretrained": raw}).pretrained is expected


def test_json_typed_values_are_accepted_too() -> None:
    hp = parse_hyperparameters({"lr": 0.5, "epochs": 3, "pretrained": False})
    assert (hp.lr, hp.epochs, hp.pretrained) == (0.5, 3, False)


def test_platform_keys_are_ignored() -> None:
    raw = {"sagemaker_program": "x", "_tuning_objective_metric": "valid:accuracy", "lr": "0.1"}
    assert parse_hyperparameters(raw).lr == 0.1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("lr", "fast", "lr='fast' is invalid: expected a number in (0, 10]"),
        ("lr", "0", "lr='0' is out of range"),
        ("lr", "nan", "lr='nan' is invalid"),
        ("batch_size", "0", "batch_size='0' is out of range: expected an integer in [1, 65536]"),
        ("batch_size", "70000", "expected an integer in [1, 65536]"),
        ("eps", "1", "eps='1' is out of range: expected a number in (0, 1)"),
        ("patience", "-1", "expected an integer >= 0 (0 turns early stopping off)"),
        ("batch_size", "64.5", "batch_size='64.5' is invalid"),
        ("dropout", "1", "dropout='1' is out of range"),
        ("pretrained", "maybe", "pretrained='maybe' is invalid: expected true or false"),
        ("image_size", "16", "image_size='16' is out of range"),
        ("feature_cache", "sometimes", "expected auto, on or off"),
        ("learning_rate", "0.1", "unknown hyperparameter 'learning_rate'"),
    ],
)
def test_bad_values_name_the_parameter_and_what_is_allowed(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ClientError) as error:
        parse_hyperparameters({name: value})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_json_encoded_values_as_the_sdk_framework_estimators_send_them() -> None:
    """The SDK's framework estimators json.dumps every value; the generic Estimator does not."""
    hp = parse_hyperparameters(
        {"lr": '"0.001"', "amp": '"auto"', "epochs": "3", "pretrained": '"false"', "eps": "1e-9"}
    )
    assert (hp.lr, hp.amp, hp.epochs, hp.pretrained, hp.eps) == (0.001, "auto", 3, False, 1e-9)
    with pytest.raises(ClientError, match="lr='\"fast\"' is invalid"):
        parse_hyperparameters({"lr": '"fast"'})


def test_trajectory_settings_leave_out_what_does_not_change_the_head() -> None:
    base = parse_hyperparameters({})
    longer = parse_hyperparameters(
        {"epochs": "50", "num_workers": "0", "patience": "3", "onnx": "off"}
    )
    assert longer.onnx is False and base.onnx is True
    assert trajectory_settings(longer) == trajectory_settings(base)
    assert trajectory_settings(parse_hyperparameters({"lr": "0.01"})) != trajectory_settings(base)
