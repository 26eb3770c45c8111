"""Contract tests: the real `serve` command on a model made by the real `train`, as
processes, and (make test-images) in the images: the serving image serves what the
training image trained. Each runs on both backends (TorchScript on torch, ONNX Runtime: in
the images, the gpu and the cpu serving image), which must keep the same contract.

One tiny training job per session and one server per module and backend keep this file
to about three minutes on two cores. Every server process gets its own TMPDIR/TEMP, so
several can run at once, and every process a test starts is stopped (and checked gone)
before the test ends.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from launch.local import client
from model_artifact.config import ONNX_INPUT, ONNX_OUTPUT, read_config, write_config
from model_artifact.preprocessing import Preprocessing, array_transform, eval_transform, open_rgb
from serving.contract import ONNX
from support import servers
from support.jobs import train_model
from support.onnx_models import add_onnx
from support.servers import SHUTDOWN_LIMIT_S, processes_of, stop_and_clean, workers_of
from support.targets import PROCESS_ONLY, Server, Target

pytestmark = pytest.mark.contract

PAYLOAD_LIMIT_MB = 1


@pytest.fixture(scope="module")
def server(
    target: Target, backend: str, onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    work_dir = tmp_path_factory.mktemp("serve")
    env = {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(PAYLOAD_LIMIT_MB),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        # These tests compare with the artifact computed by hand in fp32.
        "SERVING_PRECISION": "fp32",
    }
    running = target.start_server(onnx_model_dir, work_dir, env, backend)
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def test_images(trained_model_dir: Path) -> list[Path]:
    data_root = trained_model_dir.parent.parent / "data" / "test"
    return sorted(data_root.glob("*/*.jpg"))[::3]


def reference_probabilities(
    model_dir: Path, images: list[Image.Image], backend: str = "torch"
) -> np.ndarray:
    """The artifact loaded in-process by hand, as a user would, without the serving code:
    model.pt with torch, or model.onnx with ONNX Runtime."""
    config = read_config(model_dir)
    rgb = [image.convert("RGB") for image in images]
    if backend == ONNX:
        assert config.onnx is not None
        transform = array_transform(config.preprocessing)
        session = ort.InferenceSession(str(model_dir / config.onnx.file))
        (logits,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: np.stack([transform(i) for i in rgb])})
        return torch.softmax(torch.as_tensor(logits), dim=1).numpy()
    torch_transform = eval_transform(config.preprocessing)
    network = torch.jit.load(str(model_dir / config.model_file), map_location="cpu")
    with torch.inference_mode():
        logits = network(torch.stack([torch_transform(image) for image in rgb]))
    return torch.softmax(logits, dim=1).numpy()


def json_probabilities(body: bytes, classes: list[str]) -> np.ndarray:
    predictions = json.loads(body)["predictions"]
    return np.array([[p["probabilities"][name] for name in classes] for p in predictions])


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def assert_still_serving(server: Server, good_image: bytes) -> None:
    assert client.ping(server.port)
    status, body, _ = server.post(good_image, "image/jpeg")
    assert status == 200, body
    assert len(json.loads(body)["predictions"]) == 1


@PROCESS_ONLY
def test_every_worker_loads_the_model_and_reports_it(server: servers.Server) -> None:
    # Each worker reports to `serve` through a file in the server's private runtime folder.
    deadline = time.monotonic() + 120
    while len(list(server.tmp_dir.glob("serve-*/worker_ready.*"))) < 2:
        assert time.monotonic() < deadline, "not every worker reported its model loaded"
        time.sleep(0.2)
    assert len(workers_of(server)) >= 2


def test_jpeg_png_json_and_npy_predictions_equal_the_artifact_in_process(
    server: Server, backend: str, onnx_model_dir: Path, test_images: list[Path]
) -> None:
    classes = list(read_config(onnx_model_dir).classes)
    images = [Image.open(path) for path in test_images[:4]]
    expected = reference_probabilities(onnx_model_dir, images, backend)

    for path, row in zip(test_images[:4], expected, strict=True):
        status, body, content_type = server.post(path.read_bytes(), "image/jpeg")
        assert (status, content_type) == (200, "application/json"), body
        np.testing.assert_allclose(json_probabilities(body, classes)[0], row, atol=1e-5)

    status, body, _ = server.post(png_bytes(images[0]), "image/png")
    assert status == 200, body
    np.testing.assert_allclose(json_probabilities(body, classes)[0], expected[0], atol=1e-5)

    instances = [{"b64": base64.b64encode(path.read_bytes()).decode()} for path in test_images[:4]]
    status, body, _ = server.post(json.dumps({"instances": instances}).encode(), "application/json")
    assert status == 200, body
    np.testing.assert_allclose(json_probabilities(body, classes), expected, atol=1e-5)

    pixels = np.stack([np.asarray(image.convert("RGB")) for image in images])
    from_pixels = reference_probabilities(
        onnx_model_dir, [Image.fromarray(p) for p in pixels], backend
    )
    status, body, content_type = server.post(
        npy_bytes(pixels), "application/x-npy", {"Accept": "application/x-npy"}
    )
    assert (status, content_type) == (200, "application/x-npy"), body
    np.testing.assert_allclose(
        np.load(io.BytesIO(body), allow_pickle=False), from_pixels, atol=1e-5
    )
    status, body, _ = server.post(npy_bytes(pixels[1]), "application/x-npy")
    assert status == 200, body
    np.testing.assert_allclose(json_probabilities(body, classes)[0], from_pixels[1], atol=1e-5)


def test_top_k_from_custom_attributes(server: Server, test_images: list[Path]) -> None:
    headers = {"X-Amzn-SageMaker-Custom-Attributes": "top_k=1"}
    status, body, _ = server.post(test_images[0].read_bytes(), "image/jpeg", headers)
    assert status == 200, body
    [prediction] = json.loads(body)["predictions"]
    assert list(prediction["probabilities"]) == [prediction["label"]]


def bomb_png() -> bytes:
    """A real PNG of 7000 x 7000 pixels (49 M, over the 40 M limit) that compresses to ~150 KB."""
    buffer = io.BytesIO()
    Image.new("L", (7000, 7000)).save(buffer, "PNG")
    return buffer.getvalue()


def over_the_pixel_budget() -> bytes:
    """Two real PNGs of 25 M pixels each (under the per-image limit, together over the
    request's 40 M) in a JSON body of ~70 KB."""
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, "PNG")
    instance = {"b64": base64.b64encode(buffer.getvalue()).decode()}
    return json.dumps({"instances": [instance, instance]}).encode()


BAD_REQUESTS = {
    "unsupported content type": (415, "text/csv", b"1,2,3", {}),
    "unsupported accept": (406, "image/jpeg", "good", {"Accept": "text/html"}),
    "not an image": (400, "image/jpeg", b"hello, I am not a JPEG", {}),
    "empty body": (400, "image/jpeg", b"", {}),
    "bad json": (400, "application/json", b'{"instances": [', {}),
    "bad base64": (400, "application/json", b'{"instances": [{"b64": "!!notbase64!!"}]}', {}),
    "pickled npy": (400, "application/x-npy", "pickled", {}),
    "float npy": (400, "application/x-npy", npy_bytes(np.zeros((8, 8, 3), np.float64)), {}),
    "decompression bomb": (400, "image/png", "bomb", {}),
    "over the pixel budget": (400, "application/json", "over budget", {}),
    "bad top_k": (400, "image/jpeg", "good", {"X-Amzn-SageMaker-Custom-Attributes": "top_k=7"}),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_client_errors_get_their_status_and_the_server_keeps_serving(
    server: Server, test_images: list[Path], case: str
) -> None:
    expected, content_type, body, headers = BAD_REQUESTS[case]
    good_image = test_images[0].read_bytes()
    payloads = {
        "good": good_image,
        "pickled": npy_bytes(np.array([{"x": 1}], dtype=object), allow_pickle=True),
        "bomb": bomb_png() if body == "bomb" else b"",
        "over budget": over_the_pixel_budget() if body == "over budget" else b"",
    }
    payload = payloads[body] if isinstance(body, str) else body
    status, answer, answer_type = server.post(payload, content_type, headers)
    assert status == expected, answer
    assert b"Traceback" not in answer
    assert answer_type == "application/json"
    assert set(json.loads(answer)) == {"error"}
    assert_still_serving(server, good_image)


def test_payload_over_the_limit_is_413(server: Server, test_images: list[Path]) -> None:
    """multi-model-server's frontend answers 413 itself, before Python sees the request.

    The client announces the body and waits (Expect: 100-continue, as curl does for large
    bodies): the server refuses it on its Content-Length and closes the connection, so a
    client that sends the whole body first may see a reset instead of the 413.
    """
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "image/jpeg")
        connection.putheader("Content-Length", str(PAYLOAD_LIMIT_MB * 1024 * 1024 + 1))
        connection.putheader("Expect", "100-continue")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert b"Traceback" not in response.read()
    finally:
        connection.close()
    status, _, _ = server.post(b"\xff" * (PAYLOAD_LIMIT_MB * 1024 * 1024 - 1000), "image/jpeg")
    assert status == 400  # just under the limit: reaches the handler, which rejects the bytes
    assert_still_serving(server, test_images[0].read_bytes())


# Bytes no answer may quote: multi-model-server's own form decoder echoes request bodies.
MARKER = b"SECRET-REQUEST-BYTES-%zz"
ODD_REQUESTS = {
    "a form body (what curl -d and urllib send by default)": (
        {"Content-Type": "application/x-www-form-urlencoded"},
        "jpeg",
        415,
    ),
    "a form body with a charset": (
        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        "jpeg",
        415,
    ),
    "a multipart form": (
        {"Content-Type": "multipart/form-data; boundary=XyZ"},
        b"--XyZ\r\nContent-Disposition: form-data; name=f\r\n\r\n" + MARKER + b"\r\n--XyZ--\r\n",
        415,
    ),
    "no Content-Type": ({}, "jpeg", 415),
    "an empty Content-Type": ({"Content-Type": ""}, "jpeg", 415),
    "JSON nested 100,000 deep": ({"Content-Type": "application/json"}, b"[" * 100_000, 400),
    "a body just over the limit, sent whole before reading": (
        {"Content-Type": "image/jpeg"},
        MARKER + b"\xff" * (PAYLOAD_LIMIT_MB * 1024 * 1024),
        413,
    ),
    "a body 8 times the limit, sent whole before reading": (
        {"Content-Type": "image/jpeg"},
        MARKER + b"\xff" * (8 * PAYLOAD_LIMIT_MB * 1024 * 1024),
        413,
    ),
}


def raw_post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """POST with exactly these headers (no Content-Type unless given), the whole body sent
    before the answer is read, as urllib and requests do."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("case", ODD_REQUESTS)
def test_odd_requests_get_a_short_json_4xx_that_quotes_nothing(
    server: Server, test_images: list[Path], case: str
) -> None:
    headers, body, expected = ODD_REQUESTS[case]
    good_image = test_images[0].read_bytes()
    payload = good_image + MARKER if body == "jpeg" else body
    assert isinstance(payload, bytes)
    status, answer_type, answer = raw_post(server.port, "/invocations", payload, headers)
    assert status == expected, answer[:300]
    assert answer_type == "application/json"
    assert set(json.loads(answer)) == {"error"}
    assert MARKER not in answer and b"Traceback" not in answer
    assert_still_serving(server, good_image)


def test_urllib_without_a_content_type_gets_a_415_that_says_what_to_send(
    server: Server, test_images: list[Path]
) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/invocations", data=test_images[0].read_bytes()
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    assert raised.value.code == 415
    assert "image/jpeg" in json.loads(raised.value.read())["error"]


def test_execution_parameters_describe_this_server(server: Server) -> None:
    """Batch Transform asks for them when a job leaves them unset."""
    url = f"http://127.0.0.1:{server.port}/execution-parameters"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers.get("Content-Type") == "application/json"
        parameters = json.loads(response.read())
    assert parameters == {
        "MaxConcurrentTransforms": 2 * 8,  # 2 workers, batches of 8 (the default)
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": PAYLOAD_LIMIT_MB,
    }


def broken_copies(model_dir: Path, root: Path, backend: str) -> list[tuple[Path, str]]:
    """Model directories `serve` must refuse on `backend`, each with the reason it gives."""
    config = read_config(model_dir)
    copies = {name: root / name for name in ("broken", "no-onnx", "wrong-size", "wrong-classes")}
    for copy in copies.values():
        shutil.copytree(model_dir, copy)
    no_config = root / "no-config"
    no_config.mkdir()
    if backend != ONNX:
        (copies["broken"] / config.model_file).write_bytes(b"half a model file")
        return [
            (copies["broken"], "not a TorchScript model"),
            (no_config, "model_config.json is missing"),
        ]
    assert config.onnx is not None and config.onnx.int8 is not None
    for graph in (config.onnx.file, config.onnx.int8.file):  # whichever `auto` serves
        (copies["broken"] / graph).write_bytes(b"half an ONNX file")
    (copies["no-onnx"] / config.onnx.file).unlink()
    size = config.preprocessing.image_size + 8
    resized = Preprocessing.for_image_size(size)
    write_config(copies["wrong-size"], dataclasses.replace(config, preprocessing=resized))
    more = dataclasses.replace(config, classes=(*config.classes, "fox"))
    write_config(copies["wrong-classes"], more)
    return [
        (copies["broken"], "onnx is not an ONNX model"),
        (copies["no-onnx"], "scripts/local.py export --model-dir"),
        (copies["wrong-size"], f"of shape ['batch', 3, {size}, {size}]"),
        (copies["wrong-classes"], f"lists {len(more.classes)} classes"),
        (no_config, "model_config.json is missing"),
    ]


def test_broken_artifacts_make_serve_exit_non_zero_with_the_reason(
    target: Target, backend: str, onnx_model_dir: Path, tmp_path: Path
) -> None:
    for model_dir, reason in broken_copies(onnx_model_dir, tmp_path, backend):
        server = target.start_server(model_dir, tmp_path / f"serve-{model_dir.name}", None, backend)
        try:
            exit_code = server.wait_for_exit(timeout=300)
            log = server.log()
        finally:
            leftovers = server.close()
        assert exit_code != 0, model_dir.name
        assert reason in log, model_dir.name  # the reason the user reads in `docker logs`
        assert leftovers == []


def test_a_default_accept_no_encoder_writes_makes_serve_exit_with_the_reason(
    target: Target, trained_model_dir: Path, tmp_path: Path
) -> None:
    """Not a server whose every request without Accept runs the model, then answers 406."""
    env = {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"}
    server = target.start_server(trained_model_dir, tmp_path / "serve", env)
    try:
        exit_code = server.wait_for_exit(timeout=300)
        log = server.log()
    finally:
        leftovers = server.close()
    assert exit_code != 0
    assert "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT must be one of" in log
    assert leftovers == []


BATCHING = {
    "on": {
        "SAGEMAKER_MODEL_SERVER_BATCH_SIZE": "4",
        "SAGEMAKER_MODEL_SERVER_MAX_BATCH_DELAY": "3000",
    },
    "off": {"SAGEMAKER_MODEL_SERVER_BATCH_SIZE": "1"},
}


@pytest.mark.parametrize("batching", BATCHING)
def test_concurrent_requests_share_a_forward_pass_and_each_gets_its_own_answer(
    target: Target,
    backend: str,
    onnx_model_dir: Path,
    test_images: list[Path],
    tmp_path: Path,
    batching: str,
) -> None:
    """Batching on: 4 requests sent together are one server batch (the 3 s delay leaves
    time for all of them); each is decoded with its own headers and fails alone."""
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SERVING_PRECISION": "fp32", **BATCHING[batching]}
    running = target.start_server(onnx_model_dir, tmp_path / "serve", env, backend)
    jpeg = test_images[0].read_bytes()
    requests = [
        (jpeg, "image/jpeg", {}),
        (png_bytes(Image.open(test_images[1])), "image/png", {"Accept": "application/x-npy"}),
        (b"not an image", "image/jpeg", {}),
        (jpeg, "image/jpeg", {"X-Amzn-SageMaker-Custom-Attributes": "top_k=9"}),
    ]
    answers: list[tuple[int, str, str | None, bytes]] = [(0, "", None, b"")] * len(requests)
    start_together = threading.Barrier(len(requests))

    def send(index: int) -> None:
        body, content_type, headers = requests[index]
        start_together.wait()
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=120)
        connection.request("POST", "/invocations", body, {"Content-Type": content_type, **headers})
        response = connection.getresponse()
        answers[index] = (
            response.status,
            response.getheader("Content-Type", ""),
            response.getheader("x-serving-batch-size"),
            response.read(),
        )
        connection.close()

    # Then 4 requests of 16 images each: the worker's answer to their batch (about 10 KB)
    # can reach the frontend in pieces (test_serving_frontend.py splits it at every byte).
    many = json.dumps({"instances": [{"b64": base64.b64encode(jpeg).decode()}] * 16}).encode()
    large: list[int] = []

    def send_many() -> None:
        status, body, _ = running.post(many, "application/json")
        large.append(status if len(json.loads(body).get("predictions", [])) == 16 else -status)

    try:
        running.wait_until_ready()
        for sender in (send, send_many):
            threads = [
                threading.Thread(target=sender, args=(index,) if sender is send else ())
                for index in range(len(requests))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        leftovers = running.close()
    assert leftovers == []
    assert [answer[0] for answer in answers] == [200, 200, 400, 400]
    assert [answer[1] for answer in answers] == [
        "application/json",
        "application/x-npy",
        "application/json",
        "application/json",
    ]
    expected_size = "4" if batching == "on" else "1"
    assert [answer[2] for answer in answers] == [expected_size] * len(requests)
    classes = list(read_config(onnx_model_dir).classes)
    reference = reference_probabilities(onnx_model_dir, [Image.open(test_images[0])], backend)
    np.testing.assert_allclose(json_probabilities(answers[0][3], classes), reference, atol=1e-5)
    assert large == [200] * len(requests)


@PROCESS_ONLY
def test_sigterm_stops_the_server_and_every_worker(server: servers.Server) -> None:
    """Runs last in this module: it stops the shared server."""
    assert len(workers_of(server)) >= 2  # the two workers' listeners (and their handlers)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(timeout=SHUTDOWN_LIMIT_S)
    assert time.monotonic() - started < SHUTDOWN_LIMIT_S
    assert exit_code == 0
    assert processes_of(server) == []


# How far the ONNX backend's probabilities (Pillow and numpy preprocessing, ONNX Runtime)
# may stray from torch's on a real photo: resizing differs by at most a grey level a pixel.
PHOTO_PROBABILITY_TOLERANCE = 0.01


def classify_all(
    model_dir: Path, images: list[Path], work_dir: Path, env: dict[str, str]
) -> list[dict[str, object]]:
    server = servers.start(model_dir, work_dir, env)
    try:
        server.wait_until_ready()
        answers = [client.classify_file(server.port, path) for path in images]
    finally:
        leftovers = stop_and_clean(server)
    assert leftovers == []
    assert [status for status, _ in answers] == [200] * len(images)
    return [answer["predictions"][0] for _, answer in answers]


@pytest.mark.photos
def test_real_photos_are_classified_over_http_alike_on_both_backends(
    photos_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A model trained on the real photos (from scratch: no ImageNet weights offline),
    served by torch and by ONNX Runtime in fp32: the same top-1 on every test photo."""
    root = tmp_path_factory.mktemp("photos")
    model_dir = train_model(photos_dir, root / "job")
    images = sorted(path for path in (photos_dir / "test").glob("*/*") if path.is_file())
    add_onnx(model_dir, [open_rgb(path) for path in images[::8]], int8=False)
    classes = read_config(model_dir).classes
    reference = reference_probabilities(model_dir, [Image.open(path) for path in images])
    fp32 = {"SERVING_PRECISION": "fp32"}
    for backend in ("torch", ONNX):
        env = {"SERVING_BACKEND": backend, **fp32}
        served = classify_all(model_dir, images, root / f"serve-{backend}", env)
        labels = [prediction["label"] for prediction in served]
        assert labels == [classes[int(i)] for i in reference.argmax(axis=1)], backend
        probabilities = np.array(
            [[prediction["probabilities"][name] for name in classes] for prediction in served]  # type: ignore[index]
        )
        difference = float(np.abs(probabilities - reference).max())
        accuracy = np.mean(
            [label == path.parent.name for label, path in zip(labels, images, strict=True)]
        )
        print(
            f"{len(images)} test photos over HTTP on {backend}: accuracy {accuracy:.3f}, "
            f"largest probability difference from torch in process {difference:.5f}"
        )
        assert difference <= PHOTO_PROBABILITY_TOLERANCE, backend
