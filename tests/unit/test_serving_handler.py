"""The four inference functions and the handler service, on a tiny TorchScript model."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from mms.context import Context, RequestProcessor
from PIL import Image

from model_artifact.config import ArtifactError
from model_artifact.preprocessing import Preprocessing, eval_transform
from serving import handler
from serving.errors import ServeConfigError
from support.tiny_models import CLASSES, encoded, photo, write_model_dir

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


@pytest.fixture(scope="module", autouse=True)
def fp32_serving() -> Iterator[None]:
    """These tests compare with the artifact computed by hand in fp32: serve in fp32
    (test_serving_precision.py covers the reduced precisions)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SERVING_PRECISION", "fp32")
        yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def model(model_dir: Path) -> handler.LoadedModel:
    return handler.model_fn(model_dir)


def reference_probabilities(model_dir: Path, images: list[Image.Image]) -> np.ndarray:
    """What the artifact predicts when loaded by hand, without the serving code."""
    config = json.loads((model_dir / "model_config.json").read_text())
    transform = eval_transform(Preprocessing.from_dict(config["preprocessing"]))
    network = torch.jit.load(str(model_dir / "model.pt"))
    with torch.no_grad():
        logits = network(torch.stack([transform(image) for image in images]))
    return torch.softmax(logits, dim=1).numpy()


def test_model_fn_loads_the_artifact(model: handler.LoadedModel) -> None:
    assert model.classes == ("cat", "dog")
    assert model.preprocessing.image_size == 32
    assert not model.runner.network.training


def test_predictions_match_the_artifact_loaded_by_hand(
    model_dir: Path, model: handler.LoadedModel
) -> None:
    images = [photo((250, 10, 10)), photo((10, 10, 250), (30, 60))]
    probabilities = handler.predict_fn(images, model)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities, reference_probabilities(model_dir, images), atol=1e-6)
    one_by_one = [handler.predict_fn([image], model)[0] for image in images]
    np.testing.assert_allclose(probabilities, np.stack(one_by_one), atol=1e-6)


def test_predict_fn_runs_in_inference_mode(model: handler.LoadedModel) -> None:
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            seen.append((torch.is_inference_mode_enabled(), len(images)))
            return model.runner.network(images)

    runner = dataclasses.replace(model.runner, network=Recorder())
    handler.predict_fn([photo((1, 2, 3))] * 3, dataclasses.replace(model, runner=runner))
    assert seen == [(True, 3)]  # one batched forward pass


def test_the_four_functions_end_to_end(model: handler.LoadedModel) -> None:
    images = handler.input_fn(encoded(photo((200, 100, 0)), "JPEG"), "image/jpeg")
    probabilities = handler.predict_fn(images, model)
    prediction = handler.Prediction(probabilities, model.classes)
    body, content_type = handler.output_fn(prediction, "application/json")
    [prediction] = json.loads(body)["predictions"]
    assert content_type == "application/json"
    assert prediction["label"] in CLASSES
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_broken_model_file_is_a_load_error(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "model")
    (model_dir / "model.pt").write_bytes(b"this is not a TorchScript archive")
    with pytest.raises(ArtifactError, match="not a TorchScript model"):
        handler.model_fn(model_dir)


def test_class_list_that_does_not_match_the_outputs_is_a_load_error(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "model", classes=["cat", "dog", "fox"])
    with pytest.raises(ArtifactError, match="3 classes"):
        handler.model_fn(model_dir)


# --- the handler service, with multi-model-server's own Context objects ---


def mms_context(model_dir: Path, headers: list[dict[str, object]]) -> Context:
    context = Context("model", str(model_dir), None, len(headers), None, "1.1.11")
    context.request_processor = [RequestProcessor(request_headers) for request_headers in headers]
    return context


def status_of(context: Context, index: int) -> int:
    return context.get_response_status(index)[0]


@pytest.fixture(scope="module")
def service(model: handler.LoadedModel) -> handler.HandlerService:
    loaded = handler.HandlerService()
    loaded.model = model
    return loaded


def test_a_server_batch_answers_each_request_on_its_own(
    service: handler.HandlerService, model_dir: Path
) -> None:
    good_jpeg = encoded(photo((250, 10, 10)), "JPEG")
    good_png = encoded(photo((10, 250, 10)))
    data = [
        {"body": good_jpeg},
        {"body": b"not an image"},
        {"body": bytearray(good_png)},
        {"body": good_png},
        {},  # multi-model-server leaves out an empty body
    ]
    headers: list[dict[str, object]] = [
        {"Content-Type": "image/jpeg", "body": {"content-type": "image/jpeg"}},
        {"Content-Type": "image/jpeg"},
        {"content-type": "image/png", "accept": "application/x-npy"},
        {"Content-Type": "text/plain"},
        {"Content-Type": "image/png"},
    ]
    context = mms_context(model_dir, headers)
    bodies = service.handle(data, context)

    assert [status_of(context, i) for i in range(5)] == [200, 400, 200, 415, 400]
    # Every answer says how many requests shared the forward pass.
    sizes = [context.get_response_headers(i).get("x-serving-batch-size") for i in range(5)]
    assert sizes == ["5"] * 5
    assert [context.get_response_content_type(i) for i in range(5)] == [
        "application/json",
        "application/json",
        "application/x-npy",
        "application/json",
        "application/json",
    ]
    for index in (1, 3, 4):
        assert set(json.loads(bodies[index])) == {"error"}
    [first] = json.loads(bodies[0])["predictions"]
    [alone] = service.handle([{"body": good_jpeg}], mms_context(model_dir, headers[:1]))
    [alone_prediction] = json.loads(alone)["predictions"]
    assert first["label"] == alone_prediction["label"]
    assert first["probabilities"] == pytest.approx(alone_prediction["probabilities"], abs=1e-6)
    third = np.load(io.BytesIO(bodies[2]), allow_pickle=False)
    np.testing.assert_allclose(
        third, reference_probabilities(model_dir, [Image.open(io.BytesIO(good_png))]), atol=1e-6
    )


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "image/png", "Accept": "text/csv"}, "good", 406),
        ({"Content-Type": "application/json"}, b'{"instances": [{"b64": "%%%"}]}', 400),
        (
            {"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=9"},
            "good",
            400,
        ),
        ({"Content-Type": "application/x-npy"}, b"\x93NUMPY garbage", 400),
    ],
)
def test_client_errors_answer_their_status_and_a_short_json_body(
    service: handler.HandlerService,
    model_dir: Path,
    headers: dict[str, object],
    body: bytes | str,
    status: int,
) -> None:
    payload = encoded(photo((5, 5, 5))) if body == "good" else body
    context = mms_context(model_dir, [headers])
    [answer] = service.handle([{"body": payload}], context)
    assert status_of(context, 0) == status
    message = json.loads(answer)["error"]
    assert message and "Traceback" not in message and "\n" not in message


def test_top_k_header_limits_the_probabilities(
    service: handler.HandlerService, model_dir: Path
) -> None:
    headers = {"Content-Type": "image/png", CUSTOM_ATTRIBUTES: "top_k=1"}
    context = mms_context(model_dir, [headers])
    [answer] = service.handle([{"body": encoded(photo((5, 5, 5)))}], context)
    [prediction] = json.loads(answer)["predictions"]
    assert list(prediction["probabilities"]) == [prediction["label"]]


def test_a_bug_is_a_500_without_a_traceback_in_the_body(
    service: handler.HandlerService, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_predict(images: object, model: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(handler, "predict_fn", broken_predict)
    context = mms_context(model_dir, [{"Content-Type": "image/png"}, {"Content-Type": "x/y"}])
    bodies = service.handle([{"body": encoded(photo((1, 1, 1)))}, {"body": b"x"}], context)
    assert [status_of(context, 0), status_of(context, 1)] == [500, 415]
    assert "secret" not in bodies[0].decode()
    assert set(json.loads(bodies[0])) == {"error"}


def test_initialize_reports_ready_or_the_failure_reason(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    monkeypatch.setenv("SERVING_STATE_DIR", str(state_dir))
    handler.HandlerService().initialize(mms_context(model_dir, []))
    assert [path.name.split(".")[0] for path in state_dir.iterdir()] == ["worker_ready"]

    broken = write_model_dir(tmp_path / "broken")
    (broken / "model.pt").write_bytes(b"garbage")
    with pytest.raises(ArtifactError):
        handler.HandlerService().initialize(mms_context(broken, []))
    reason = (state_dir / "model_load_failed.txt").read_text()
    assert "not a TorchScript model" in reason


def test_module_entry_point_loads_on_none_then_handles(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler, "_service", handler.HandlerService())
    monkeypatch.delenv("SERVING_STATE_DIR", raising=False)
    assert handler.handle(None, mms_context(model_dir, [])) is None
    context = mms_context(model_dir, [{"Content-Type": "image/png"}])
    [answer] = handler.handle([{"body": encoded(photo((3, 3, 3)))}], context)
    assert len(json.loads(answer)["predictions"]) == 1


def test_default_accept_follows_the_environment(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "Application/X-NPY")
    service = handler.HandlerService()
    service.initialize(mms_context(model_dir, []))
    # Read once per worker, when it loads the model: not again for every request.
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")
    context = mms_context(model_dir, [{"Content-Type": "image/png", "Accept": "*/*"}])
    [answer] = service.handle([{"body": encoded(photo((9, 9, 9)))}], context)
    assert context.get_response_content_type(0) == "application/x-npy"
    assert np.load(io.BytesIO(answer), allow_pickle=False).shape == (1, 2)


def test_a_default_accept_no_encoder_writes_fails_the_load_with_the_reason(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a 406 after the forward pass of every request without Accept."""
    monkeypatch.setenv("SERVING_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")
    with pytest.raises(ServeConfigError):
        handler.HandlerService().initialize(mms_context(model_dir, []))
    reason = (tmp_path / "model_load_failed.txt").read_text()
    assert reason.startswith("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT must be one of")


def test_a_request_keeps_no_copy_of_its_body() -> None:
    """The body is decoded into images; a second reference would only hold memory longer."""
    assert "body" not in {field.name for field in dataclasses.fields(handler.Request)}


def test_model_fn_takes_the_workers_gpu_from_the_context_like_the_toolkit(
    model_dir: Path,
) -> None:
    """The toolkit passes the context as a trailing argument when model_fn takes one."""
    from inspect import signature  # noqa: PLC0415

    assert list(signature(handler.model_fn).parameters) == ["model_dir", "context"]
    loaded = handler.model_fn(str(model_dir), mms_context(model_dir, []))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert loaded.runner.device.type == expected
