"""The four functions of the SageMaker inference contract, for the classifier artifact.

    model_fn(model_dir)            -> LoadedModel   (TorchScript + model_config.json, warmed up)
    input_fn(body, content_type)   -> list of RGB images
    predict_fn(images, model)      -> Predictions   (one batched forward, no gradients)
    output_fn(predictions, accept) -> (body, content type)

Preprocessing is the training job's eval transform, rebuilt from `model_config.json`;
nothing else of the training code is imported.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from serving import codecs, contract
from serving.artifact import read_model_config
from serving.errors import ModelLoadError
from trainer.preprocessing import MAX_IMAGE_PIXELS, Preprocessing, eval_transform

logger = logging.getLogger(__name__)

# Forward passes of at most this many images, to bound memory for large server batches.
PREDICT_CHUNK = 32


@dataclass(frozen=True)
class LoadedModel:
    network: torch.jit.ScriptModule
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    transform: Callable[[Image.Image], torch.Tensor]
    device: torch.device


@dataclass(frozen=True)
class Predictions:
    probabilities: np.ndarray  # float32, images x classes, rows sum to 1
    classes: tuple[str, ...]


def select_device(gpu_id: int | None = None) -> torch.device:
    """The GPU multi-model-server assigned to this worker, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", gpu_id or 0)
    return torch.device("cpu")


def model_fn(model_dir: str | Path, device: torch.device | None = None) -> LoadedModel:
    """Load the artifact once per worker and warm it up; any problem raises ModelLoadError."""
    config = read_model_config(Path(model_dir))
    device = device or select_device()
    try:
        with warnings.catch_warnings():
            # torch 2.14 deprecates TorchScript in favour of torch.export; the artifact is
            # TorchScript on purpose (loads in 0.06 s), so keep the warning out of every log.
            warnings.simplefilter("ignore", FutureWarning)
            # TorchScript archives load with a restricted unpickler: no arbitrary code runs.
            network = torch.jit.load(str(config.model_path), map_location=device)
    except (RuntimeError, ValueError, OSError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelLoadError(f"{config.model_path} is not a TorchScript model: {detail}") from None
    network.eval()
    try:
        preprocessing = Preprocessing.from_dict(config.preprocessing)
        transform = eval_transform(preprocessing)
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f"model_config.json: invalid preprocessing ({error})") from None
    model = LoadedModel(network, config.classes, preprocessing, transform, device)
    warm_up(model)
    return model


def warm_up(model: LoadedModel) -> None:
    """One prediction at load time: the first request doesn't pay for lazy initialisation,
    and a model whose outputs don't match its class list never serves."""
    size = model.preprocessing.resize_size
    try:
        logits = _forward(model, [Image.new("RGB", (size, size))])
    except RuntimeError as error:
        raise ModelLoadError(f"the model fails on a {size}x{size} image: {error}") from None
    expected = (1, len(model.classes))
    if tuple(logits.shape) != expected:
        raise ModelLoadError(
            f"the model outputs shape {tuple(logits.shape)} for one image, but model_config.json "
            f"lists {len(model.classes)} classes"
        )


def input_fn(
    request_body: bytes | None, content_type: str | None, max_pixels: int = MAX_IMAGE_PIXELS
) -> list[Image.Image]:
    """Decode one request into RGB images; see codecs.DECODERS for the content types."""
    return codecs.decode(request_body, content_type, max_pixels)


def predict_fn(images: Sequence[Image.Image], model: LoadedModel) -> Predictions:
    """Class probabilities for every image, in order."""
    if not images:
        return Predictions(np.zeros((0, len(model.classes)), dtype=np.float32), model.classes)
    logits = _forward(model, images)
    probabilities = torch.softmax(logits.float(), dim=1)
    return Predictions(probabilities.cpu().numpy(), model.classes)


def output_fn(
    predictions: Predictions, accept: str | None, top_k: int | None = None
) -> tuple[bytes, str]:
    """Encode as the Accept header asks (default: SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT)."""
    response_type = codecs.negotiate(accept, contract.default_accept())
    body = codecs.encode(predictions.probabilities, predictions.classes, response_type, top_k)
    return body, response_type


def _forward(model: LoadedModel, images: Sequence[Image.Image]) -> torch.Tensor:
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), PREDICT_CHUNK):
            chunk = images[start : start + PREDICT_CHUNK]
            batch = torch.stack([model.transform(image) for image in chunk])
            chunks.append(model.network(batch.to(model.device)))
    return torch.cat(chunks)
