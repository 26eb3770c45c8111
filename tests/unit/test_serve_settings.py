"""The serving environment contract and the model server's config."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import pytest

from serving import contract, entry, frontend, server, state
from serving.errors import ServeConfigError


def test_defaults_fit_a_small_cpu_instance() -> None:
    settings = contract.read_settings({}, cores=2, gpus=0)
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
    settings = contract.read_settings(env, cores=cores, gpus=0)
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
    lines = frontend.mms_properties(settings, tmp_path).splitlines()
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
    env = frontend.model_server_env(settings, tmp_path)
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


# --- batching, precision, GPUs, multi-model ---


def test_batching_defaults_differ_on_cpu_and_gpu() -> None:
    cpu = contract.read_settings({}, cores=2, gpus=0)
    gpu = contract.read_settings({}, cores=8, gpus=1)
    assert (cpu.batch_size, cpu.max_batch_delay_ms) == (8, 5)
    assert (gpu.batch_size, gpu.max_batch_delay_ms) == (32, 2)


def test_batching_follows_the_environment() -> None:
    settings = contract.read_settings(
        {"SAGEMAKER_MODEL_SERVER_BATCH_SIZE": "1", "SAGEMAKER_MODEL_SERVER_MAX_BATCH_DELAY": "0"},
        cores=2,
        gpus=0,
    )
    assert (settings.batch_size, settings.max_batch_delay_ms) == (1, 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAGEMAKER_MODEL_SERVER_BATCH_SIZE", "0"),
        ("SAGEMAKER_MODEL_SERVER_BATCH_SIZE", "many"),
        ("SAGEMAKER_MODEL_SERVER_MAX_BATCH_DELAY", "-5"),
        ("SAGEMAKER_MODEL_SERVER_MAX_BATCH_DELAY", "2.5"),
        ("SERVING_PRECISION", "int8"),
        ("SERVING_MAX_MODELS", "0"),
        ("SERVING_PRELOAD", "maybe"),
    ],
)
def test_bad_serving_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ServeConfigError, match=name):
        contract.read_settings({name: value}, cores=2, gpus=0)


@pytest.mark.parametrize("value", ["auto", "fp32", "BF16", " fp16 "])
def test_precision_choices(value: str) -> None:
    settings = contract.read_settings({"SERVING_PRECISION": value}, cores=2, gpus=0)
    assert settings.precision == value.strip().lower()


@pytest.mark.parametrize(
    ("visible", "expected"), [("0,1", 2), ("", 0), ("-1", 0), ("0,-1,2", 1), ("GPU-abc", 1)]
)
def test_visible_gpus_follow_cuda_visible_devices(visible: str, expected: int) -> None:
    assert contract.visible_gpus({"CUDA_VISIBLE_DEVICES": visible}) == expected


def test_visible_gpus_are_counted_from_the_driver_without_torch(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"0000:0{index}:00.0").mkdir()
    assert contract.visible_gpus({}, driver_dir=tmp_path) == 3
    assert contract.visible_gpus({}, driver_dir=tmp_path / "absent") == 0


def test_one_worker_per_gpu_with_the_cores_shared_out() -> None:
    settings = contract.read_settings({}, cores=16, gpus=4)
    assert (settings.workers, settings.torch_threads, settings.gpus) == (4, 4, 4)


def test_multi_model_mode_is_selected_by_the_platforms_variable() -> None:
    single = contract.read_settings({}, cores=8, gpus=0)
    multi = contract.read_settings({"SAGEMAKER_MULTI_MODEL": "true"}, cores=8, gpus=0)
    assert (single.multi_model, single.workers) == (False, 2)
    assert (multi.multi_model, multi.workers) == (True, 1)  # one worker per model


@pytest.mark.parametrize(("gib", "expected"), [(1, 1), (2, 1), (8, 7), (64, 63)])
def test_models_held_at_once_default_to_one_per_gib_beyond_the_first(
    gib: int, expected: int
) -> None:
    settings = contract.read_settings({}, cores=2, gpus=0, memory_bytes=gib * 1024**3)
    assert settings.max_models == expected
    env = {"SERVING_MAX_MODELS": "3"}
    assert contract.read_settings(env, cores=2, gpus=0, memory_bytes=gib * 1024**3).max_models == 3


def test_multi_model_config_shares_the_port_with_the_management_api(tmp_path: Path) -> None:
    settings = contract.read_settings(
        {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_BIND_TO_PORT": "9090"}, cores=2, gpus=0
    )
    properties = dict(
        line.split("=", 1) for line in frontend.mms_properties(settings, tmp_path).splitlines()
    )
    assert (
        properties["inference_address"] == properties["management_address"] == "http://0.0.0.0:9090"
    )
    assert properties["number_of_gpu"] == "0"


def test_the_gpu_count_reaches_the_model_server(tmp_path: Path) -> None:
    settings = contract.read_settings({}, cores=8, gpus=2)
    properties = dict(
        line.split("=", 1) for line in frontend.mms_properties(settings, tmp_path).splitlines()
    )
    assert (properties["number_of_gpu"], properties["default_workers_per_model"]) == ("2", "2")


# --- what serve tells the JVM frontend ---


def frontend_settings(env: dict[str, str] | None = None) -> contract.ServeSettings:
    base = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "2", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    return contract.read_settings({**base, **(env or {})}, cores=4, gpus=0)


def test_the_frontend_gets_the_batching_and_the_payload_limit() -> None:
    properties = frontend.system_properties(frontend_settings())
    assert properties["serving.batch_size"] == "8"
    assert properties["serving.max_batch_delay_ms"] == "5"
    assert properties["serving.max_request_bytes"] == str(2 * 1024 * 1024)
    assert properties["serving.max_models"] == "0"  # no limit for a single model


@pytest.mark.parametrize(
    ("key", "mentions"),
    [
        ("serving.too_large_body", "SAGEMAKER_MAX_PAYLOAD_IN_MB=2"),
        ("serving.form_body", "image/jpeg"),
        ("serving.model_limit_body", "SERVING_MAX_MODELS"),
    ],
)
def test_the_frontends_answers_are_short_json_errors(key: str, mentions: str) -> None:
    body = json.loads(frontend.system_properties(frontend_settings())[key])
    assert set(body) == {"error"}
    assert mentions in body["error"] and "\n" not in body["error"]


def test_execution_parameters_fill_every_workers_batch_with_single_images() -> None:
    properties = frontend.system_properties(frontend_settings())
    assert json.loads(properties["serving.execution_parameters"]) == {
        "MaxConcurrentTransforms": 16,  # 2 workers x batches of 8
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 2,
    }


def launch_of(tmp_path: Path, models: str | None = "model=model") -> frontend.Launch:
    jar = tmp_path / "frontend.jar"
    jar.write_bytes(b"jar")
    return frontend.Launch(
        Path("/usr/bin/java"), jar, tmp_path, tmp_path / "mms.properties", tmp_path, models
    )


def test_jvm_command_runs_the_extension_with_start_up_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontend, "BUILD_DIR", tmp_path / "build")
    launch = launch_of(tmp_path)
    command = frontend.jvm_command(frontend_settings(), launch, python="/venv/bin/serve-backend")
    assert command[0] == "/usr/bin/java"
    assert set(frontend.START_UP_FLAGS) <= set(command)
    assert not any(word.startswith("-XX:SharedArchiveFile") for word in command)  # none written
    classpath = command[command.index("-cp") + 1].split(":")
    # The extension first (its decoder replaces multi-model-server's), jars only.
    assert classpath[0] == str(launch.jar) and all(entry.endswith(".jar") for entry in classpath)
    assert command[command.index("-cp") + 2] == frontend.MAIN_CLASS
    assert command[command.index("--python") + 1] == "/venv/bin/serve-backend"
    assert command[command.index("-m") + 1] == "model=model"
    assert "-Dserving.batch_size=8" in command


def test_jvm_command_uses_the_class_archive_written_for_this_jvm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontend, "BUILD_DIR", tmp_path / "build")
    launch = launch_of(tmp_path)
    archive = frontend.archive_path(launch.java, frontend.classpath(launch.jar))
    archive.parent.mkdir()
    archive.write_bytes(b"archive")
    command = frontend.jvm_command(frontend_settings(), launch)
    assert f"-XX:SharedArchiveFile={archive}" in command
    launch.jar.write_bytes(b"another jar")  # a rebuilt jar: that archive no longer fits
    assert frontend.archive_path(launch.java, frontend.classpath(launch.jar)) != archive


def test_vmargs_replace_the_start_up_flags(tmp_path: Path) -> None:
    settings = frontend_settings({"SAGEMAKER_MODEL_SERVER_VMARGS": "-Xmx1g -XX:+UseG1GC"})
    command = frontend.jvm_command(settings, launch_of(tmp_path, models=None))
    assert command[1:3] == ["-Xmx1g", "-XX:+UseG1GC"]
    assert not set(frontend.START_UP_FLAGS) & set(command)
    assert "-m" not in command  # a multi-model endpoint starts without a model


def test_workers_get_the_preload_socket_unless_preloading_is_off(tmp_path: Path) -> None:
    settings = contract.read_settings({}, cores=2, gpus=0)
    env = frontend.model_server_env(settings, tmp_path)
    assert env[contract.PRELOAD_SOCKET_ENV] == str(tmp_path / frontend.PRELOAD_SOCKET)
    launcher = server.preload_launcher(settings)
    assert launcher is not None and launcher.name == "serve-backend"
    off = contract.read_settings({"SERVING_PRELOAD": "false"}, cores=2, gpus=0)
    assert server.preload_launcher(off) is None  # multi-model-server runs plain python


def test_nothing_is_preloaded_without_the_launcher_to_reach_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preloaded process that no launcher connects to would only hold memory."""
    settings = contract.read_settings({}, cores=2, gpus=0)
    assert settings.preload
    monkeypatch.setattr(server.sys, "executable", str(tmp_path / "python"))  # no serve-backend
    assert server.preload_launcher(settings) is None
