"""Contract test: a multi-model endpoint unloads and loads a model while clients invoke it
and another model, as the platform does when it makes room (DELETE /models/<name>, then
POST /models again).

Every answer must be a 200, or for the model that comes and goes a JSON 404 (unloaded) or
503 (being unloaded or loaded); never a 500, never a dropped connection. The models are
tiny TorchScript networks (they load in milliseconds); the images are large, so that each
request keeps a worker busy for a while and requests are in flight at every unload.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from launch.local import client
from launch.local.processes import wait_for_ping
from support import servers
from support.servers import Server, stop_and_clean
from support.tiny_models import encoded, photo, write_model_dir

pytestmark = pytest.mark.contract

STEADY, CHURNED = "alpha", "beta"
CLIENTS_PER_MODEL = 3
CYCLES = 6  # the count of unloads and loads
RESPONSE_TIMEOUT_S = 10  # bounds each unload's wait for the requests in flight
CLIENT_TIMEOUT_S = 60  # a request unanswered this long counts as dropped


@dataclass(frozen=True)
class Answer:
    model: str
    status: int  # 0: no HTTP answer (connection dropped, reset or timed out)
    json_body: bool
    sent: float  # time.monotonic() when the request left, and when its answer came
    answered: float


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Server]:
    env = {
        "SERVING_MAX_MODELS": "4",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(RESPONSE_TIMEOUT_S),
        "SERVING_PRECISION": "fp32",
    }
    running = servers.start_multi_model(tmp_path / "endpoint", env)
    try:
        wait_for_ping(running.port, running.process)
        yield running
    finally:
        assert stop_and_clean(running) == []


def invoke(port: int, model: str, image: bytes) -> Answer:
    sent = time.monotonic()
    try:
        status, body, _ = client.post_invocation(
            port, image, "image/jpeg", timeout=CLIENT_TIMEOUT_S, target_model=model
        )
    except OSError:  # http.client's RemoteDisconnected and timeouts included
        return Answer(model, 0, False, sent, time.monotonic())
    return Answer(model, status, is_json_object(body), sent, time.monotonic())


def is_json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def unload(port: int, model: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/models/{model}", method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_unloading_a_model_in_use_answers_every_request(endpoint: Server, tmp_path: Path) -> None:
    folders = {
        name: write_model_dir(tmp_path / "models" / name, classes)
        for name, classes in ((STEADY, ["cat", "dog"]), (CHURNED, ["apple", "banana"]))
    }
    for name, folder in folders.items():
        assert client.load_model(endpoint.port, name, folder)[0] == 200
    # 6 million pixels: decoding one keeps a worker busy for tens of milliseconds.
    image = encoded(photo((90, 120, 200), size=(3000, 2000)), "JPEG")
    answers: list[Answer] = []
    done = threading.Event()

    def keep_invoking(model: str) -> None:
        while not done.is_set():
            answers.append(invoke(endpoint.port, model, image))

    clients = [
        threading.Thread(target=keep_invoking, args=(model,))
        for model in (STEADY, CHURNED)
        for _ in range(CLIENTS_PER_MODEL)
    ]
    for thread in clients:
        thread.start()
    churn: list[tuple[int, int]] = []
    unloads: list[float] = []
    try:
        for _ in range(CYCLES):
            time.sleep(0.5)  # requests for both models queue up
            unloads.append(time.monotonic())
            unloaded = unload(endpoint.port, CHURNED)
            time.sleep(0.2)  # requests for the absent model
            churn.append((unloaded, client.load_model(endpoint.port, CHURNED, folders[CHURNED])[0]))
        time.sleep(0.5)
    finally:
        done.set()
        for thread in clients:
            thread.join(timeout=CLIENT_TIMEOUT_S + 10)
    assert churn == [(200, 200)] * CYCLES
    steady = [answer.status for answer in answers if answer.model == STEADY]
    churned = [answer for answer in answers if answer.model == CHURNED]
    assert steady and set(steady) == {200}
    counts = Counter(answer.status for answer in churned)
    assert set(counts) <= {200, 404, 503}, counts
    assert all(answer.json_body for answer in churned)
    # The churn met requests: some were in flight when an unload began and were answered
    # (the unload waited for them), some found the model away or coming back.
    assert any(
        answer.status == 200 and answer.sent < started < answer.answered
        for answer in churned
        for started in unloads
    )
    assert counts[404] + counts[503] > 0, counts
