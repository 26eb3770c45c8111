"""The serving environment contract and the model server's config."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

from serving import contract, entry, server, state
from serving.errors import ServeConfigError


def test_defaults_fit_a_small_cpu_instance() -> None:
    settings = contract.read_settings({}, cores=2)
    assert settings.base_dir == Path("/opt/ml")
    assert settings.model_dir == Path("/opt/ml/model")
    assert settings.port == 8080
    assert (settings.workers, settings.torch_threads) == (1, 2)
    assert settings.response_timeout_s == 60
    assert settings.max_payload_bytes == 6 * 1024 * 1024
    assert settings.default_accept == "application/json"


@pytest.mark.parametrize(
    ("env", "cores", "expected"),
    [
        ({}, 1, (1, 1)),
        ({}, 8, (2, 4)),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, 2, (2, 1)),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}, 16, (3, 5)),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "4"}, 2, (4, 1)),
        ({"OMP_NUM_THREADS": "1"}, 8, (2, 1)),
    ],
)
def test_workers_times_threads_fit_the_cores(
    env: dict[str, str], cores: int, expected: tuple[int, int]
) -> None:
    settings = contract.read_settings(env, cores=cores)
    assert (settings.workers, settings.torch_threads) == expected


def test_environment_overrides() -> None:
    settings = contract.read_settings(
        {
            "SAGEMAKER_BASE_DIR": "/srv/ml",
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "45",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2",
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/x-npy",
        },
        cores=2,
    )
    assert settings.model_dir == Path("/srv/ml/model")
    assert settings.port == 9090
    assert settings.response_timeout_s == 45  # the explicit seconds variable wins
    assert settings.max_payload_bytes == 2 * 1024 * 1024
    assert settings.default_accept == "application/x-npy"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "http"),
        ("SAGEMAKER_BIND_TO_PORT", "40000"),  # multi-model-server 1.1 rejects ports >= 32767
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "-1"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "1.5"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ServeConfigError, match=name):
        contract.read_settings({name: value}, cores=2)


def test_model_server_config(tmp_path: Path) -> None:
    settings = contract.read_settings(
        {"SAGEMAKER_BIND_TO_PORT": "9090", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, cores=4
    )
    lines = server.mms_properties(settings, tmp_path).splitlines()
    properties = dict(line.split("=", 1) for line in lines)
    assert properties["inference_address"] == "http://0.0.0.0:9090"
    assert properties["management_address"] == f"unix:{tmp_path / 'management.sock'}"
    assert properties["default_service_handler"] == "serving.entry:handle"
    assert properties["default_workers_per_model"] == "2"
    assert properties["default_response_timeout_seconds"] == "60"
    assert "default_response_timeout" not in properties  # read as minutes by MMS 1.1
    assert properties["max_request_size"] == str(6 * 1024 * 1024)
    assert properties["decode_input_request"] == "false"


def test_model_server_env_isolates_each_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    settings = contract.read_settings({"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, cores=4)
    env = server.model_server_env(settings, tmp_path)
    assert env["TMPDIR"] == env["TEMP"] == env[contract.STATE_DIR_ENV] == str(tmp_path)
    assert env["OMP_NUM_THREADS"] == "2"
    assert "PYTHONPATH" not in env  # workers import the installed serving package


def test_runtime_dir_is_private_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.tempfile, "tempdir", str(tmp_path))
    with server.runtime_dir() as runtime:
        assert runtime.parent == tmp_path and runtime.is_dir()
    assert not runtime.exists()


def test_a_tmpdir_too_long_for_unix_sockets_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(server.tempfile, "tempdir", str(deep))
    with pytest.raises(server.ServeFailedError, match="shorter directory"), server.runtime_dir():
        pass
    assert list(deep.iterdir()) == []


def test_workers_report_through_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (state.ready_workers(tmp_path), state.load_failure(tmp_path)) == (0, None)
    monkeypatch.setenv(contract.STATE_DIR_ENV, str(tmp_path))
    state.report_ready()
    state.report_load_failure("model.pt is missing")
    assert (state.ready_workers(tmp_path), state.load_failure(tmp_path)) == (
        1,
        "model.pt is missing",
    )


def test_an_entry_point_import_failure_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(contract.STATE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(entry, "_handle", None)
    monkeypatch.setitem(sys.modules, "serving.handler", None)  # import fails
    with pytest.raises(ImportError):
        entry.handle(None, object())
    assert "cannot import the handler" in (state.load_failure(tmp_path) or "")


def test_each_startup_phase_is_timed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="serve"), server.timed("load the model"):
        time.sleep(0.02)
    [record] = [r for r in caplog.records if getattr(r, "phase", None) == "load the model"]
    assert record.seconds >= 0.02  # type: ignore[attr-defined]
