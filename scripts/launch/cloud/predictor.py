"""The SDK Predictor `invoke` uses, and what an answer from the serving image looks like."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.cloud.settings import import_sagemaker
from serving import content_types

JSON = content_types.JSON


@dataclass(frozen=True)
class ImageRequest:
    """One image as `invoke` sends it."""

    path: Path
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Classification:
    label: str
    probability: float

    def __str__(self) -> str:
        return f"{self.label} {self.probability:.3f}"


Answer = Classification | str  # the top class, or why there is none


def first_prediction(response: Any) -> Answer:
    """The top class from `{"predictions": [{"label", "probability", ...}]}`, or why not."""
    try:
        payload = json.loads(response) if isinstance(response, (bytes, str)) else response
        top = payload["predictions"][0]
        return Classification(str(top["label"]), float(top["probability"]))
    except (ValueError, KeyError, IndexError, TypeError):
        shown = response.decode(errors="replace") if isinstance(response, bytes) else response
        return f"unexpected response {str(shown)[:40]!r}"


def image_predictor_class() -> type:
    """A Predictor that sends image bytes and parses the serving image's JSON predictions.

    Built on first use because the SDK import takes seconds.
    """
    import_sagemaker()
    from sagemaker.deserializers import SimpleBaseDeserializer  # noqa: PLC0415
    from sagemaker.predictor import Predictor  # noqa: PLC0415
    from sagemaker.serializers import IdentitySerializer  # noqa: PLC0415

    class PredictionsDeserializer(SimpleBaseDeserializer):  # type: ignore[misc]
        """JSON when the body is JSON, else the raw bytes (so `invoke` can show what came)."""

        def __init__(self) -> None:
            super().__init__(accept=JSON)

        def deserialize(self, stream: Any, content_type: str) -> Any:
            try:
                body = stream.read()
            finally:
                stream.close()
            try:
                return json.loads(body)
            except ValueError:
                return body

    class ImagePredictor(Predictor):  # type: ignore[misc]
        def __init__(self, endpoint_name: str, sagemaker_session: Any = None, **_: Any) -> None:
            super().__init__(
                endpoint_name,
                sagemaker_session=sagemaker_session,
                # application/x-image: the serving image tells JPEG from PNG itself.
                serializer=IdentitySerializer(content_type=content_types.X_IMAGE),
                deserializer=PredictionsDeserializer(),
            )

        def classify(self, body: bytes, content_type: str, target_model: str | None = None) -> Any:
            """Predictions for one request body (image bytes, or JSON with base64 images).

            `target_model`: the archive, relative to a multi-model endpoint's prefix.
            """
            return self.predict(
                body, initial_args={"ContentType": content_type}, target_model=target_model
            )

    return ImagePredictor
