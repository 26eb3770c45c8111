"""Contract tests: `serve` as a SageMaker multi-model endpoint, as processes, with two
models made by the real `train` (each with its own classes).

The calls are the platform's: POST /models {"model_name", "url"} with the folder that holds
a model's files, POST /models/<name>/invoke, GET /models, GET and DELETE /models/<name>.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launch.local import client
from launch.local.processes import free_port, wait_for_ping
from launch.synthetic_images import make_dataset
from model_artifact.config import read_config
from model_artifact.preprocessing import open_rgb
from support import servers
from support.jobs import train_tiny
from support.onnx_models import add_onnx
from support.servers import SHUTDOWN_LIMIT_S, Server, processes_of, stop_and_clean
from trainer.contract import TrainingPaths

pytestmark = pytest.mark.contract

MODEL_CLASSES = {"pets": ("cat", "dog"), "fruit": ("apple", "banana", "cherry")}
MAX_MODELS = 2


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/<name>/: two trained model folders with different classes, and their data."""
    root = tmp_path_factory.mktemp("multi-model")
    (root / "models").mkdir()
    for name, classes in MODEL_CLASSES.items():
        data = make_dataset(root / "data" / name, per_class=4, classes=classes)
        job = train_tiny(data, root / "jobs" / name, epochs="1")
        assert job.returncode == 0, job.stderr[-2000:]
        TrainingPaths(root / "jobs" / name).model_dir.rename(root / "models" / name)
        add_onnx(root / "models" / name, [open_rgb(p) for p in (data / "train").glob("*/*.jpg")])
    return root / "models"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"SERVING_MAX_MODELS": str(MAX_MODELS), "SERVING_PRECISION": "fp32"}
    running = servers.start_multi_model(tmp_path_factory.mktemp("endpoint"), env)
    try:
        wait_for_ping(running.port, running.process)
        yield running
    finally:
        stop_and_clean(running)


def wait_for(condition: Callable[[], bool], timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def call(
    server: Server, method: str, path: str, document: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    body = json.dumps(document).encode() if document is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}",
        data=body,
        method=method,
        headers={"Content-Type": "application/json"} if body else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def load(server: Server, name: str, folder: Path) -> int:
    return call(server, "POST", "/models", {"model_name": name, "url": str(folder)})[0]


def classify(server: Server, name: str, image: Path) -> tuple[int, dict[str, object]]:
    return client.classify_file(server.port, image, target_model=name)


def an_image(models_dir: Path, name: str) -> Path:
    return next((models_dir.parent / "data" / name / "test").glob("*/*.jpg"))


def loaded(server: Server) -> list[str]:
    status, listing = call(server, "GET", "/models")
    assert status == 200
    return sorted(str(model["modelName"]) for model in listing["models"])  # type: ignore[index, union-attr]


def test_an_endpoint_starts_empty_and_healthy(endpoint: Server) -> None:
    assert client.ping(endpoint.port)
    assert loaded(endpoint) == []


def test_each_model_answers_with_its_own_classes(endpoint: Server, models_dir: Path) -> None:
    for name in MODEL_CLASSES:
        assert load(endpoint, name, models_dir / name) == 200
    assert loaded(endpoint) == sorted(MODEL_CLASSES)
    for name, classes in MODEL_CLASSES.items():
        status, answer = classify(endpoint, name, an_image(models_dir, name))
        assert status == 200, answer
        [prediction] = answer["predictions"]  # type: ignore[misc]
        assert set(prediction["probabilities"]) == set(classes)
        assert read_config(models_dir / name).classes == classes


def test_loading_a_loaded_model_again_is_409(endpoint: Server, models_dir: Path) -> None:
    assert load(endpoint, "pets", models_dir / "pets") == 409


def test_an_unknown_model_is_404(endpoint: Server, models_dir: Path) -> None:
    assert classify(endpoint, "nothing-here", an_image(models_dir, "pets"))[0] == 404
    assert call(endpoint, "GET", "/models/nothing-here")[0] == 404
    assert call(endpoint, "DELETE", "/models/nothing-here")[0] == 404


def test_a_full_endpoint_answers_507_until_a_model_is_unloaded(
    endpoint: Server, models_dir: Path
) -> None:
    """SageMaker's contract: 507 when a model can't be loaded for lack of memory; the platform
    then unloads a model and loads again."""
    assert loaded(endpoint) == sorted(MODEL_CLASSES)  # MAX_MODELS are loaded
    status, answer = call(
        endpoint, "POST", "/models", {"model_name": "pets2", "url": str(models_dir / "pets")}
    )
    assert status == 507 and set(answer) == {"error"}
    assert loaded(endpoint) == sorted(MODEL_CLASSES)  # nothing half-loaded is left behind

    assert call(endpoint, "DELETE", "/models/pets")[0] == 200
    assert classify(endpoint, "pets", an_image(models_dir, "pets"))[0] == 404
    assert load(endpoint, "pets2", models_dir / "pets") == 200
    assert classify(endpoint, "pets2", an_image(models_dir, "pets"))[0] == 200
    assert loaded(endpoint) == ["fruit", "pets2"]


def test_a_model_that_fails_to_load_can_be_loaded_again_once_fixed(
    endpoint: Server, models_dir: Path, tmp_path: Path
) -> None:
    """multi-model-server's rollback of a failed load can leave the model registered; the
    next registration must still succeed."""
    assert call(endpoint, "DELETE", "/models/pets2")[0] == 200
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_config.json").write_text(
        (models_dir / "pets" / "model_config.json").read_text()
    )
    (broken / "model.pt").write_bytes(b"half a model")
    assert load(endpoint, "retry", broken) >= 500
    assert load(endpoint, "retry", models_dir / "pets") == 200
    assert classify(endpoint, "retry", an_image(models_dir, "pets"))[0] == 200


def test_form_bodies_are_refused_on_a_models_invoke_too(endpoint: Server, models_dir: Path) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{endpoint.port}/models/fruit/invoke",
        data=an_image(models_dir, "fruit").read_bytes(),  # urllib labels it a form
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    assert raised.value.code == 415
    assert set(json.loads(raised.value.read())) == {"error"}


def test_sigterm_stops_the_endpoint_and_every_model(endpoint: Server) -> None:
    """Runs last in this module: it stops the shared endpoint."""
    assert loaded(endpoint)
    endpoint.process.send_signal(signal.SIGTERM)
    assert endpoint.process.wait(timeout=SHUTDOWN_LIMIT_S) == 0
    assert processes_of(endpoint) == []


LOCAL = Path(__file__).resolve().parents[2] / "scripts" / "local.py"


def local(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOCAL), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_local_serve_and_invoke_drive_a_multi_model_endpoint(
    models_dir: Path, tmp_path: Path
) -> None:
    """scripts/local.py serve --multi-model --models-dir DIR loads every model of DIR;
    invoke --target-model NAME classifies with that one. On ONNX Runtime (--backend): the
    endpoint's other tests run on torch."""
    port = str(free_port())
    tmp_dir = tmp_path / "tmp"  # the server's TMPDIR: everything it starts is found by it
    tmp_dir.mkdir()
    log = tmp_path / "serve.log"
    command = ["serve", "--multi-model", "--models-dir", str(models_dir), "--port", port]
    command += ["--backend", "onnx"]
    with log.open("wb") as log_file:
        serving = subprocess.Popen(
            [sys.executable, str(LOCAL), *command],
            env={**os.environ, "TMPDIR": str(tmp_dir), "TEMP": str(tmp_dir)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    image = an_image(models_dir, "fruit")
    try:
        all_loaded = wait_for(
            lambda: (
                log.read_text().count(": 200 ") == len(MODEL_CLASSES) or serving.poll() is not None
            )
        )
        assert all_loaded and serving.poll() is None, log.read_text()[-3000:]
        invoked = local("invoke", "--port", port, "--target-model", "fruit", str(image))
        unknown = local("invoke", "--port", port, "--target-model", "none", str(image))
    finally:
        serving.send_signal(signal.SIGTERM)
        exit_code = serving.wait(timeout=SHUTDOWN_LIMIT_S)
    assert invoked.returncode == 0, invoked.stdout + invoked.stderr
    [row] = [line for line in invoked.stdout.splitlines() if line.startswith(image.name)]
    assert row.split()[2] in MODEL_CLASSES["fruit"]
    assert unknown.returncode == 1 and " 404 " in unknown.stdout
    assert exit_code == 0
    assert processes_of(Server(int(port), serving, log, tmp_dir)) == []
