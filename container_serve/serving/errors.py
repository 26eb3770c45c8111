"""Errors of the serving container, each client error with the HTTP status it answers.

Client errors subclass the toolkit's GenericInferenceToolkitError, so they keep their
status wherever the toolkit's conventions apply; the handler answers them with a short
JSON body `{"error": "..."}` instead of the toolkit's message plus traceback. A model
directory that can't be served raises model_artifact's ArtifactError.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from sagemaker_inference.errors import GenericInferenceToolkitError


class ClientError(GenericInferenceToolkitError):
    """A mistake in the request that its sender must fix; never a traceback."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str) -> None:
        # Netty rejects CR/LF in headers, and the message also travels as the reason phrase.
        message = " ".join(message.split())
        super().__init__(int(self.status), message, self.status.phrase)


class BadRequestError(ClientError):
    status = HTTPStatus.BAD_REQUEST


class NotAcceptableError(ClientError):
    status = HTTPStatus.NOT_ACCEPTABLE


class PayloadTooLargeError(ClientError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaTypeError(ClientError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class ServeConfigError(Exception):
    """A serving environment variable has a value `serve` can't use."""


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")


def first_line(error: BaseException) -> str:
    """The first line of an error's message (TorchScript's and ONNX Runtime's run to pages),
    or its type's name when it has none."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
