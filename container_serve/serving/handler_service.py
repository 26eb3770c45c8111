"""What multi-model-server runs in each worker (via entry.handle): handle(data, context).

It replaces the toolkit's Transformer.transform for two reasons:
- the toolkit answers every error with its message plus a traceback, and any exception
  that is not a toolkit error as a 500; here client errors answer a short JSON body
  with their own status, and bugs a 500 whose traceback goes to the log only;
- the toolkit reads request 0's headers for a whole server batch; here every request
  of a batch is decoded with its own headers and fails or succeeds on its own, while
  the good images of the batch share one forward pass.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import torch
from PIL import Image

from serving import content_types, contract
from serving.codecs import negotiate, parse_top_k
from serving.errors import ClientError, ModelLoadError, error_body
from serving.handler import (
    LoadedModel,
    Predictions,
    input_fn,
    model_fn,
    output_fn,
    predict_fn,
    select_device,
)
from serving.state import report_load_failure, report_ready

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal server error; the reason is in the server log"


@dataclass
class Request:
    """One request of a server batch: its images and wishes, or the error it answers."""

    images: list[Image.Image] = field(default_factory=list)
    accept: str = content_types.JSON
    top_k: int | None = None
    status: HTTPStatus = HTTPStatus.OK
    error: str | None = None

    def fail(self, status: HTTPStatus, message: str) -> None:
        self.status, self.error = status, message


class HandlerService:
    def __init__(self) -> None:
        self.model: LoadedModel | None = None

    def initialize(self, context: Any) -> None:
        """Load and warm up the model; a failure is reported to `serve`, which exits."""
        started = time.perf_counter()
        properties = context.system_properties
        try:
            self.model = model_fn(properties["model_dir"], select_device(properties.get("gpu_id")))
        except Exception as error:
            reason = str(error) if isinstance(error, ModelLoadError) else repr(error)
            report_load_failure(reason)
            logger.error("model failed to load: %s", reason)
            raise
        logger.info(
            "model loaded and warmed up in %.2f s (pid %d, %s, %d torch threads, classes %s)",
            time.perf_counter() - started,
            os.getpid(),
            self.model.device,
            torch.get_num_threads(),
            ", ".join(self.model.classes),
        )
        report_ready()

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        if self.model is None:
            raise RuntimeError("handle() called before the model was loaded")
        requests = [
            self.decode(item, headers_of(context, index), self.model)
            for index, item in enumerate(data)
        ]
        bodies = self.predict_and_encode(requests, self.model)
        for index, request in enumerate(requests):
            if request.error is None:
                context.set_response_content_type(index, request.accept)
            else:
                context.set_response_status(int(request.status), request.status.phrase, idx=index)
                context.set_response_content_type(index, content_types.JSON)
        return bodies

    @staticmethod
    def decode(item: dict[str, Any], headers: dict[str, str], model: LoadedModel) -> Request:
        request = Request()
        try:
            request.accept = negotiate(headers.get("accept"), contract.default_accept())
            request.top_k = parse_top_k(
                headers.get(contract.CUSTOM_ATTRIBUTES_HEADER), len(model.classes)
            )
            request.images = input_fn(
                request_body(item), headers.get("content-type"), model.preprocessing.max_pixels
            )
        except ClientError as error:
            logger.info("client error %d: %s", error.status_code, error.message)
            request.fail(HTTPStatus(error.status_code), error.message)
        except Exception:
            logger.exception("decoding a request failed")
            request.fail(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)
        return request

    @staticmethod
    def predict_and_encode(requests: list[Request], model: LoadedModel) -> list[bytes]:
        """One forward pass for the good images of the whole batch, then one body per request."""
        good = [request for request in requests if request.error is None]
        try:
            predictions = predict_fn([image for request in good for image in request.images], model)
        except Exception:
            logger.exception("prediction failed")
            for request in good:
                request.fail(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)
        offset = 0
        bodies = []
        for request in requests:
            if request.error is None:
                count = len(request.images)
                rows = predictions.probabilities[offset : offset + count]
                offset += count
                bodies.append(encode(request, Predictions(rows, predictions.classes)))
            else:
                bodies.append(error_body(request.error))
        return bodies


def encode(request: Request, predictions: Predictions) -> bytes:
    try:
        body, request.accept = output_fn(predictions, request.accept, request.top_k)
    except ClientError as error:
        request.fail(HTTPStatus(error.status_code), error.message)
        return error_body(error.message)
    except Exception:
        logger.exception("encoding a response failed")
        request.fail(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)
        return error_body(INTERNAL_ERROR)
    return body


def headers_of(context: Any, index: int) -> dict[str, str]:
    """Request `index`'s own headers, names lower-cased (HTTP names are case-insensitive)."""
    headers = context.get_all_request_header(index) or {}
    return {str(name).lower(): value for name, value in headers.items() if isinstance(value, str)}


def request_body(item: dict[str, Any]) -> bytes | None:
    """The raw body; MMS passes it as the parameter "body" (or omits it when empty)."""
    body = item.get("body")
    if body is None:
        return None
    return bytes(body) if isinstance(body, bytes | bytearray) else str(body).encode("utf-8")


_service = HandlerService()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """multi-model-server's entry point: data is None once, at load time."""
    if data is None:
        _service.initialize(context)
        return None
    return _service.handle(data, context)
