"""Channels as ImageFolders: scanning, validation and decoding.

Classes come from the train channel (sorted sub-folder names, as torchvision's
ImageFolder orders them). An image that cannot be decoded is not fatal: the
loader marks it (label -1), the training loop leaves it out and the job counts
it; only when too many are unreadable does the job stop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from model_artifact.preprocessing import UnreadableImageError, open_rgb
from trainer.errors import ClientError

log = logging.getLogger(__name__)

UNREADABLE = -1  # label of an item whose file could not be decoded
MAX_UNREADABLE_FRACTION = 0.05


@dataclass(frozen=True)
class Channel:
    name: str
    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]  # (file, class index)

    def __len__(self) -> int:
        return len(self.samples)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _files_under(folder: Path) -> list[Path]:
    files = []
    for directory, subdirs, names in os.walk(folder, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        files += [Path(directory) / name for name in sorted(names) if not name.startswith(".")]
    return files


def scan_channel(name: str, root: Path, classes: Sequence[str] | None = None) -> Channel:
    """Index an ImageFolder channel; with `classes` given, its folders must be among them."""
    if not root.is_dir():
        raise ClientError(
            f"channel {name!r} is missing: expected an ImageFolder (one folder per class) at {root}"
        )
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
    if not folders:
        raise ClientError(
            f"channel {name!r} has no class folders: expected {root}/<class>/<image files>"
        )
    if classes is None:
        if len(folders) < 2:
            raise ClientError(f"channel {name!r} has {len(folders)} class; at least 2 are needed")
        classes = folders
    else:
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise ClientError(
                f"channel {name!r} has classes the train channel lacks: {', '.join(unknown)}"
            )
    samples: list[tuple[Path, int]] = []
    for folder in folders:
        files = _files_under(root / folder)
        if not files:
            raise ClientError(f"class {folder!r} in channel {name!r} is empty")
        samples += [(path, classes.index(folder)) for path in files]
    return Channel(name, root, tuple(classes), tuple(samples))


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """(preprocessed image, class index); unreadable files give a zero image and label -1."""

    def __init__(
        self,
        channel: Channel,
        transform: Callable[..., torch.Tensor],
        image_size: int,
    ) -> None:
        self.channel = channel
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.channel)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.channel.samples[index]
        try:
            image = self.transform(open_rgb(path))
        except UnreadableImageError as error:
            log.debug("unreadable %s: %s", path, error)
            return torch.zeros(3, self.image_size, self.image_size), UNREADABLE
        return image, label


def image_loader(
    dataset: ImageDataset,
    batch_groups: Sequence[Sequence[int]],
    num_workers: int,
    pin_memory: bool,
) -> DataLoader[tuple[torch.Tensor, int]]:
    """One batch per group of `batch_groups`, in their order; workers decode in parallel."""
    return DataLoader(
        dataset,
        batch_sampler=[list(group) for group in batch_groups],
        num_workers=num_workers,
        pin_memory=pin_memory,
        # Its own generator: a DataLoader draws a seed from the global RNG otherwise, which
        # would shift the dropout masks of the textbook loop away from the cached one's.
        generator=torch.Generator().manual_seed(0),
    )


def check_unreadable(channel: Channel, unreadable: int) -> None:
    """Log how many files were skipped; stop the job when it is more than 5% of the channel."""
    if not unreadable:
        return
    fraction = unreadable / len(channel)
    log.warning(
        "channel %s: skipped %d of %d files that are not decodable images",
        channel.name,
        unreadable,
        len(channel),
    )
    if fraction > MAX_UNREADABLE_FRACTION:
        raise ClientError(
            f"channel {channel.name!r}: {unreadable} of {len(channel)} files ({fraction:.0%}) are "
            f"not decodable images, over the {MAX_UNREADABLE_FRACTION:.0%} limit"
        )
