"""Bounded samples of a channel's images, preprocessed as the model sees them.

The ONNX step calibrates the int8 model on a few train images and compares it with fp32
on a few valid ones: its cost must not grow with the data set. A sample is the same
for the same channel (seeded), and spread across the classes: it takes the classes in
turn, so that a large class cannot crowd a small one out of the per-class agreement.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from model_artifact.preprocessing import (
    Preprocessing,
    UnreadableImageError,
    eval_transform,
    open_rgb,
)
from trainer.data import Channel
from trainer.errors import ClientError

log = logging.getLogger(__name__)

SAMPLE_SEED = 0


@dataclass(frozen=True)
class Sample:
    """Preprocessed images (N, 3, S, S) float32 and their class indices (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def spread_order(channel: Channel, seed: int = SAMPLE_SEED) -> Iterator[int]:
    """Every item of `channel` once: a seeded shuffle of each class, the classes in turn."""
    rng = np.random.default_rng(seed)
    labels = np.array([label for _, label in channel.samples])
    queues = [
        rng.permutation(np.flatnonzero(labels == index)).tolist()
        for index in range(len(channel.classes))
    ]
    for turn in range(max(map(len, queues), default=0)):
        yield from (queue[turn] for queue in queues if turn < len(queue))


def sample_images(channel: Channel, limit: int, preprocessing: Preprocessing) -> Sample:
    """Up to `limit` decodable images of `channel` in `spread_order`, preprocessed."""
    transform = eval_transform(preprocessing)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index in spread_order(channel):
        if len(labels) == limit:
            break
        path, label = channel.samples[index]
        try:
            images.append(transform(open_rgb(path)).numpy())
        except UnreadableImageError as error:
            log.debug("unreadable %s: %s", path, error)
            continue
        labels.append(label)
    if not images:
        raise ClientError(f"channel {channel.name!r} has no decodable image")
    return Sample(np.stack(images), np.array(labels, dtype=np.int64))
