"""What `invoke` sends, and what an answer from the serving image looks like (the SDK's
Predictor that carries them is `sdk2.image_predictor_class` or `sdk3.ImagePredictor`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
