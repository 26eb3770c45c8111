"""The two backends behind the one handler (serving/backends/): the choice of backend and
of ONNX graph (the int8 gate), the ONNX Runtime worker, and a worker without torch."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model_artifact.config import ArtifactError, read_config, write_config
from model_artifact.preprocessing import Preprocessing
from serving import contract, frontend, handler, preload
from serving.backends import onnx_files
from serving.errors import ServeConfigError
from support.onnx_models import add_onnx, with_agreement
from support.tiny_models import encoded, photo, write_model_dir

BOTH = ("torch", "onnx")
# What the int8 graph is calibrated on (and compared on).
CALIBRATION = [photo((index * 25, 90, 200 - index * 20)) for index in range(8)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = write_model_dir(tmp_path_factory.mktemp("tiny") / "model")
    add_onnx(model_dir, CALIBRATION)
    return model_dir


@pytest.fixture
def onnx_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(contract.BACKEND_ENV, "onnx")
    monkeypatch.setenv(contract.PRECISION_ENV, "fp32")
    monkeypatch.setenv(contract.TORCH_THREADS_ENV, "1")
    yield


def copy_of(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    copy.mkdir()
    for path in model_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


# ---------------------------------------------------------------- backend and precision


def test_auto_takes_torch_where_both_are_installed_and_onnx_without_torch() -> None:
    assert contract.serving_backend({}, installed=BOTH) == "torch"
    assert contract.serving_backend({}, installed=("onnx",)) == "onnx"
    assert contract.serving_backend({"SERVING_BACKEND": "ONNX"}, installed=BOTH) == "onnx"
    assert contract.serving_backend({}) in BOTH  # this venv: both


@pytest.mark.parametrize(
    ("env", "installed", "reason"),
    [
        ({"SERVING_BACKEND": "tensorflow"}, BOTH, "must be one of auto, torch, onnx"),
        ({"SERVING_BACKEND": "torch"}, ("onnx",), "needs torch, which is not installed"),
        ({}, (), "neither torch nor onnxruntime is installed"),
        ({"SERVING_PRECISION": "int8"}, BOTH, "SERVING_PRECISION=int8 needs the onnx backend"),
        ({"SERVING_PRECISION": "bf16"}, ("onnx",), "SERVING_PRECISION=bf16 needs the torch"),
        ({"SERVING_INT8_MIN_AGREEMENT": "1.5"}, ("onnx",), "must be a number from 0 to 1"),
        ({"SERVING_INT8_MIN_AGREEMENT": "nan"}, ("onnx",), "must be a number from 0 to 1"),
    ],
)
def test_settings_a_backend_cannot_serve_stop_serve_with_the_reason(
    env: dict[str, str], installed: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(ServeConfigError, match=reason):
        contract.read_settings(env, cores=2, gpus=0, installed=installed)


def test_the_resolved_backend_reaches_the_workers(tmp_path: Path) -> None:
    settings = contract.read_settings({}, cores=2, gpus=0, installed=("onnx",))
    assert settings.backend == "onnx"
    assert settings.int8_min_agreement == 0.995
    workers_env = frontend.model_server_env(settings, tmp_path)
    assert contract.serving_backend(workers_env, installed=BOTH) == "onnx"


@pytest.mark.parametrize(
    ("top1", "worst", "minimum", "expected"),
    [
        (1.0, 1.0, 0.995, "int8"),
        (0.995, 0.995, 0.995, "int8"),  # at the threshold
        (0.999, 0.98, 0.995, "fp32"),  # one class agrees too little
        (0.99, 1.0, 0.995, "fp32"),
        (0.99, 0.99, 0.98, "int8"),  # a lower threshold
    ],
)
def test_auto_serves_int8_only_when_it_agrees_with_fp32_overall_and_in_every_class(
    model_dir: Path, tmp_path: Path, top1: float, worst: float, minimum: float, expected: str
) -> None:
    copy = copy_of(model_dir, tmp_path)
    config = with_agreement(copy, top1, worst)
    chosen = onnx_files.choose(config, copy, "auto", minimum)
    assert chosen.precision == expected
    assert chosen.path.name == ("model.int8.onnx" if expected == "int8" else "model.onnx")
    assert f"{worst:.4f} in its worst class" in chosen.reason


def test_auto_serves_fp32_without_an_int8_graph_and_int8_then_stops_serve(
    model_dir: Path, tmp_path: Path
) -> None:
    copy = copy_of(model_dir, tmp_path)
    config = read_config(copy)
    assert config.onnx is not None
    (copy / "model.int8.onnx").unlink()
    assert onnx_files.choose(config, copy, "auto", 0.995).precision == "fp32"
    with pytest.raises(ServeConfigError, match="SERVING_PRECISION=int8, but its int8 graph"):
        onnx_files.choose(config, copy, "int8", 0.995)
    no_int8 = dataclasses.replace(config, onnx=dataclasses.replace(config.onnx, int8=None))
    assert onnx_files.choose(no_int8, copy, "auto", 0.995).precision == "fp32"
    with pytest.raises(ServeConfigError, match="the model has no int8 graph"):
        onnx_files.choose(no_int8, copy, "int8", 0.995)


def test_a_model_without_onnx_names_the_command_that_writes_it(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "model")  # model.pt only, as trained before
    with pytest.raises(ArtifactError, match=r"model.onnx is missing.*scripts/local.py export"):
        onnx_files.choose(read_config(model_dir), model_dir, "auto", 0.995)


def test_the_preloaded_process_imports_only_its_backends_runtime() -> None:
    assert preload.preloaded_modules("onnx")[0] == "onnxruntime"
    assert "torch" not in preload.preloaded_modules("onnx")
    assert preload.preloaded_modules("torch")[0] == "torch"


# -------------------------------------------------------------------- the ONNX worker


@pytest.mark.usefixtures("onnx_env")
def test_the_onnx_worker_answers_as_the_torch_worker(model_dir: Path) -> None:
    images = [photo((250, 10, 10)), photo((10, 10, 250), (300, 200)), photo((9, 99, 9), (20, 64))]
    onnx = handler.model_fn(model_dir)
    torch = handler.load_model(model_dir, "torch", "fp32")
    assert (onnx.backend, onnx.precision, onnx.runner.threads) == ("onnx", "fp32", 1)
    probabilities = handler.predict_fn(images, onnx)
    np.testing.assert_allclose(probabilities, handler.predict_fn(images, torch), atol=2e-3)
    one_by_one = [handler.predict_fn([image], onnx)[0] for image in images]
    np.testing.assert_allclose(probabilities, np.stack(one_by_one), atol=1e-6)


@pytest.mark.usefixtures("onnx_env")
def test_int8_is_served_when_asked_for(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.PRECISION_ENV, "int8")
    model = handler.model_fn(model_dir)
    assert model.precision == "int8"
    fp32 = handler.load_model(model_dir, "onnx", "fp32")
    np.testing.assert_allclose(
        handler.predict_fn(CALIBRATION, model), handler.predict_fn(CALIBRATION, fp32), atol=0.05
    )


@pytest.mark.usefixtures("onnx_env")
@pytest.mark.parametrize("case", ["corrupt", "other image size", "more classes"])
def test_a_broken_onnx_model_is_a_load_error_with_a_one_line_reason(
    model_dir: Path, tmp_path: Path, case: str
) -> None:
    copy = copy_of(model_dir, tmp_path)
    config = read_config(copy)
    if case == "corrupt":
        (copy / "model.onnx").write_bytes(b"\x08\x07 not a protobuf of a graph")
        reason = "model.onnx is not an ONNX model"
    elif case == "other image size":
        write_config(copy, dataclasses.replace(config, preprocessing=Preprocessing(40, 46)))
        reason = r"makes images of shape \['batch', 3, 40, 40\]"
    else:
        write_config(copy, dataclasses.replace(config, classes=("cat", "dog", "fox")))
        reason = "lists 3 classes"
    with pytest.raises(ArtifactError, match=reason) as raised:
        handler.model_fn(copy)
    assert "\n" not in str(raised.value)


@pytest.mark.usefixtures("onnx_env")
def test_a_server_batch_on_onnx_answers_each_request_on_its_own(model_dir: Path) -> None:
    model = handler.model_fn(model_dir)
    requests = [
        handler.Request.read(
            encoded(photo((1, 2, 3))), {"content-type": "image/png"}, model, "application/json"
        ),
        handler.Request.read(
            b"not an image", {"content-type": "image/png"}, model, "application/json"
        ),
    ]
    bodies = handler.answer(requests, model)
    assert [request.status for request in requests] == [200, 400]
    assert b"predictions" in bodies[0] and b"error" in bodies[1]


def test_an_onnx_worker_runs_without_torch(model_dir: Path, tmp_path: Path) -> None:
    """As in the CPU image: torch cannot be imported, the worker loads and predicts."""
    script = (
        "import sys\n"
        "sys.modules.update(torch=None, torchvision=None)  # as if not installed\n"
        "from serving import handler\n"
        "from PIL import Image\n"
        f"model = handler.model_fn({str(model_dir)!r})\n"
        "image = Image.new('RGB', (50, 40), (5, 6, 7))\n"
        "print(model.backend, handler.predict_fn([image], model).shape)\n"
        "assert not [m for m, v in sys.modules.items() if m.startswith('torch') and v]\n"
    )
    env = {**os.environ, "SERVING_PRECISION": "auto"}  # auto: onnx, the one installed
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["onnx", "(1,", "2)"]
