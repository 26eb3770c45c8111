"""The handler each multi-model-server worker runs: load once, then decode -> predict ->
encode for every server batch.

The four functions keep the sagemaker-inference toolkit's signatures, so a reader who
knows the toolkit recognises them:

    model_fn(model_dir, context=None) -> LoadedModel   (the backend's network + model_config.json,
                                                        warmed, in the serving precision)
    input_fn(input_data, content_type) -> RGB images    (codecs.DECODERS by content type)
    predict_fn(data, model)            -> probabilities (one batched forward, images x classes)
    output_fn(prediction, accept)      -> (body, content type)   (codecs.ENCODERS)

`HandlerService` follows the toolkit's handler-service convention (initialize once,
handle per batch) but runs its own pipeline instead of the toolkit's Transformer; see
docs/serving.md for where and why. Each request of a server batch is read with its own
headers into a `Request` and fails alone; the good images of the whole batch share one
forward pass; a client mistake answers its 4xx with a short JSON body, a bug a 500 whose
traceback stays in the log. The network is a backend's `Runner` (TorchScript on torch, or
ONNX Runtime), chosen once per server: only its module imports torch or onnxruntime.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

from model_artifact import precision
from model_artifact.config import ArtifactError, ModelConfig, read_config
from model_artifact.preprocessing import Preprocessing
from serving import backends, codecs, content_types, contract, state
from serving.backends import Runner
from serving.errors import ClientError, ServeConfigError, error_body, first_line

logger = logging.getLogger(__name__)

# Forward passes of at most this many images, to bound memory for large server batches.
PREDICT_CHUNK = 32
# TorchScript's profiling executor runs a graph as profiled on its first call and optimises
# it on its second (ONNX Runtime sizes its buffers on the first): both happen at load time,
# not on the first requests.
WARM_UP_PASSES = 2
INTERNAL_ERROR = "internal server error; the reason is in the server log"


@dataclass(frozen=True)
class LoadedModel:
    runner: Runner  # the backend's network (serving/backends/)
    config: ModelConfig
    backend: str = contract.TORCH

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def precision(self) -> str:
        return self.runner.precision

    @property
    def preprocessing(self) -> Preprocessing:
        return self.config.preprocessing


@dataclass(frozen=True)
class Prediction:
    """What one request gets back: a row of probabilities per image, and how many to report."""

    probabilities: np.ndarray  # float32, images x classes, rows sum to 1
    classes: tuple[str, ...]
    top_k: int | None = None


# ---------------------------------------------------------------- the four toolkit functions


def model_fn(model_dir: str | Path, context: Any = None) -> LoadedModel:
    """Load the artifact on this worker's device in the serving precision and warm it up;
    problems raise ArtifactError."""
    # Exactly these two parameters: the toolkit counts them to decide whether to pass the
    # context (Transformer._run_handler_function), so the timings go through a helper.
    return load_and_warm_up(Path(model_dir), context, timings={})


def input_fn(input_data: bytes | None, content_type: str | None) -> list[Image.Image]:
    """One request body -> RGB images, in request order."""
    return codecs.decode(input_data, content_type)


def predict_fn(data: Sequence[Image.Image], model: LoadedModel) -> np.ndarray:
    """Class probabilities for every image, in order (images x classes, float32)."""
    if not data:
        return np.zeros((0, len(model.classes)), dtype=np.float32)
    return softmax(forward_logits(model, data))


def output_fn(prediction: Prediction, accept: str) -> tuple[bytes, str]:
    """Encode as `accept`, a response type the request negotiated (see Request.read)."""
    body = codecs.encode(prediction.probabilities, prediction.classes, accept, prediction.top_k)
    return body, accept


# --------------------------------------------------------------------------- model loading


def load_and_warm_up(model_dir: Path, context: Any, timings: dict[str, float]) -> LoadedModel:
    """What model_fn does, adding the seconds of each step to `timings`: the worker
    (HandlerService.initialize) reports them, and runs the same code the tests run."""
    backend = contract.serving_backend()  # `serve` resolved it; set in the workers' env
    choice = contract.serving_precision()  # read once: warmed_up's fallback depends on it
    started = time.perf_counter()
    model = load_model(model_dir, backend, choice, context)
    timings["load the model"] = time.perf_counter() - started
    started = time.perf_counter()
    model = warmed_up(model, model_dir, choice, context)
    timings[f"warm up in {model.precision}"] = time.perf_counter() - started
    return model


def load_model(model_dir: Path, backend: str, choice: str, context: Any = None) -> LoadedModel:
    """The artifact's network on `backend`, in the precision `choice` resolves to."""
    config = read_config(model_dir)
    runner = backends.loader(backend)(model_dir, config, choice, context)
    return LoadedModel(runner, config, backend)


def warm_up(model: LoadedModel) -> None:
    """Predictions at load time, in the serving precision: the first request doesn't pay for
    lazy initialisation (TorchScript optimises a graph on its second run), and a model whose
    outputs don't match its class list never serves."""
    # Larger than the resize size and not square, as photos are: the resize runs too.
    width, height = model.preprocessing.resize_size * 2, model.preprocessing.resize_size + 1
    for _ in range(WARM_UP_PASSES):
        try:
            logits = forward_logits(model, [Image.new("RGB", (width, height))])
        except RuntimeError as error:
            raise ArtifactError(
                f"the model fails on a {width}x{height} image in {model.precision}: "
                f"{first_line(error)}"
            ) from None
    expected = (1, len(model.classes))
    if tuple(logits.shape) != expected:
        raise ArtifactError(
            f"the model outputs shape {tuple(logits.shape)} for one image, but its config "
            f"lists {len(model.classes)} classes"
        )


def forward_logits(model: LoadedModel, images: Sequence[Image.Image]) -> np.ndarray:
    """The network's logits for the images (float32, images x classes), in chunks."""
    chunks = [
        model.runner.logits(images[start : start + PREDICT_CHUNK])
        for start in range(0, len(images), PREDICT_CHUNK)
    ]
    return np.concatenate(chunks)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise, in float32, shifted by the row's maximum so that exp never overflows."""
    shifted = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------- one server batch


@dataclass
class Request:
    """One request of a server batch: what it asks for, what it gets, or why it fails."""

    content_type: str | None
    accept: str = content_types.JSON
    top_k: int | None = None
    images: list[Image.Image] = field(default_factory=list)
    status: HTTPStatus = HTTPStatus.OK
    error: str | None = None

    @classmethod
    def read(
        cls,
        body: bytes | None,
        headers: dict[str, str],
        model: LoadedModel,
        default_accept: str,
    ) -> Request:
        """Negotiate (no Accept or */* -> `default_accept`), parse the options and decode,
        with this request's own headers."""
        request = cls(headers.get("content-type"))
        with failing_alone(request, "decoding a request"):
            request.accept = codecs.negotiate(headers.get("accept"), default_accept)
            request.top_k = codecs.parse_top_k(
                headers.get(contract.CUSTOM_ATTRIBUTES_HEADER), len(model.classes)
            )
            request.images = input_fn(body, request.content_type)
        return request

    def fail(self, status: HTTPStatus, message: str) -> None:
        self.status, self.error = status, message


@contextlib.contextmanager
def failing_alone(request: Request, what: str) -> Iterator[None]:
    """A client error fails the request with its status; a bug with a 500 and a log entry."""
    try:
        yield
    except ClientError as error:
        logger.info("client error %d: %s", error.status_code, error.message)
        request.fail(HTTPStatus(error.status_code), error.message)
    except Exception:
        logger.exception("%s failed", what)
        request.fail(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)


def answer(requests: list[Request], model: LoadedModel) -> list[bytes]:
    """One forward pass for the good images of the whole batch, then one body per request."""
    good = [request for request in requests if request.error is None]
    probabilities = np.zeros((0, len(model.classes)), dtype=np.float32)
    try:
        probabilities = predict_fn([image for request in good for image in request.images], model)
    except Exception:
        logger.exception("prediction failed")
        for request in good:
            request.fail(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)
    bodies = []
    offset = 0
    for request in requests:
        body = b""
        if request.error is None:
            rows = probabilities[offset : offset + len(request.images)]
            offset += len(request.images)
            with failing_alone(request, "encoding a response"):
                body, _ = output_fn(Prediction(rows, model.classes, request.top_k), request.accept)
        bodies.append(body if request.error is None else error_body(request.error))
    return bodies


# ------------------------------------------------------ multi-model-server's handler service


class HandlerService:
    """What multi-model-server calls: `initialize` once per worker, `handle` per batch."""

    def __init__(self) -> None:
        self.model: LoadedModel | None = None
        # Read from the environment in `initialize`, once per worker, not per request (and
        # not here: the module-level service is built at import time).
        self.default_accept: str = contract.DEFAULT_ACCEPT

    def initialize(self, context: Any) -> None:
        """Load and warm up the model, timing each step; a failure is reported to `serve`
        (which exits, unless it is a multi-model endpoint: there the POST /models fails)."""
        timings = {"start the worker, import the handler": _seconds_since_process_start()}
        model_dir = Path(context.system_properties["model_dir"])
        try:
            # `serve` has validated it already (contract.read_settings); checked again here
            # for a worker started some other way.
            self.default_accept = contract.default_accept()
            self.model = load_and_warm_up(model_dir, context, timings)
        except Exception as error:
            known = isinstance(error, ArtifactError | ServeConfigError)
            reason = str(error) if known else repr(error)
            state.report_load_failure(reason)
            logger.error("model failed to load: %s", reason)
            raise
        logger.info(
            "model loaded and warmed up in %.2f s (pid %d, %s on %s, %s, %d threads, classes %s)",
            sum(timings.values()),
            os.getpid(),
            self.model.backend,
            self.model.runner.place,
            self.model.precision,
            self.model.runner.threads,
            ", ".join(self.model.classes),
        )
        state.report_ready(timings)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        if self.model is None:
            raise RuntimeError("handle() called before the model was loaded")
        requests = [
            Request.read(
                request_body(item), headers_of(context, index), self.model, self.default_accept
            )
            for index, item in enumerate(data)
        ]
        bodies = answer(requests, self.model)
        for index, request in enumerate(requests):
            # How many requests shared this forward pass: server-side batching made visible.
            context.set_response_header(index, contract.BATCH_SIZE_HEADER, str(len(requests)))
            if request.error is None:
                context.set_response_content_type(index, request.accept)
            else:
                context.set_response_status(int(request.status), request.status.phrase, idx=index)
                context.set_response_content_type(index, content_types.JSON)
        return bodies


def warmed_up(model: LoadedModel, model_dir: Path, choice: str, context: Any) -> LoadedModel:
    """`model` (loaded for the precision `choice`) warmed up, or for `auto` the same artifact
    in fp32 if it fails in a reduced precision: `auto` never makes a servable model
    unservable, while an explicit choice that fails is reported."""
    try:
        warm_up(model)
        return model
    except ArtifactError:
        if choice != precision.AUTO or model.precision == "fp32":
            raise
    logger.warning("the model fails in %s; serving it in fp32", model.precision)
    fp32 = load_model(model_dir, model.backend, "fp32", context)
    warm_up(fp32)
    return fp32


def _seconds_since_process_start() -> float:
    """This process's age, from the kernel's clock since boot (psutil's create_time adds the
    boot time, which the kernel gives in whole seconds: up to a second off)."""
    try:
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
        # Field 22 of /proc/self/stat, counted after the command name (which may hold spaces).
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return since_boot - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - psutil.Process().create_time()


def headers_of(context: Any, index: int) -> dict[str, str]:
    """Request `index`'s own headers, names lower-cased (HTTP names are case-insensitive)."""
    headers = context.get_all_request_header(index) or {}
    return {str(name).lower(): value for name, value in headers.items() if isinstance(value, str)}


def request_body(item: dict[str, Any]) -> bytes | None:
    """The raw body; multi-model-server passes it as "body" (or leaves it out when empty)."""
    body = item.get("body")
    if body is None:
        return None
    return bytes(body) if isinstance(body, bytes | bytearray) else str(body).encode("utf-8")


_service = HandlerService()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """multi-model-server's entry point (through serving.entry): data is None once, at load."""
    if data is None:
        _service.initialize(context)
        return None
    return _service.handle(data, context)
