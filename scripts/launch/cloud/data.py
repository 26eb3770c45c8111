"""`upload`: turn a local image data set into train/valid/test channels on S3.

Three layouts are recognised, checked in this order:

1. ImageFolder channels: DIR/train/<class>/*, DIR/valid/<class>/* (DIR/test optional),
   uploaded as they are;
2. Kaggle folders: DIR/train/<class>/* and optionally DIR/test/<class>/* (e.g. cats, dogs):
   a stratified share of train becomes valid (and test, when DIR/test is absent);
3. Kaggle competition files: DIR/cat.0.jpg, DIR/dog.0.jpg, ... (or the same inside
   DIR/train/), the class being the name before the first dot: split into all three.

Splits are seeded and stratified (each class keeps its share in every channel), so a rerun
produces the same keys, and objects already on S3 with the same size are skipped: an
interrupted upload resumes where it stopped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from launch.cloud.settings import AwsTarget, CloudError, ensure_bucket, s3_objects
from serving.content_types import IMAGE_SUFFIXES

DEFAULT_WORKERS = 8  # parallel S3 transfers

# channel -> class -> image files
Split = dict[str, dict[str, list[Path]]]


@dataclass(frozen=True)
class SplitFractions:
    valid: float = 0.1
    test: float = 0.1
    seed: int = 0


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(folder: Path) -> dict[str, list[Path]]:
    """An ImageFolder: class name -> its images (classes without images are left out)."""
    if not folder.is_dir():
        return {}
    classes = {sub.name: image_files(sub) for sub in sorted(folder.iterdir()) if sub.is_dir()}
    return {name: files for name, files in classes.items() if files}


def files_by_name_prefix(folder: Path) -> dict[str, list[Path]]:
    """Kaggle competition files: `cat.123.jpg` belongs to class `cat`."""
    classes: dict[str, list[Path]] = {}
    for path in image_files(folder) if folder.is_dir() else []:
        label, dot, _ = path.name.partition(".")
        if dot and label:
            classes.setdefault(label, []).append(path)
    return classes


def take_share(
    classes: dict[str, list[Path]], fraction: float, rng: random.Random
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Move a seeded `fraction` of every class out: (kept, taken). Stratified by class."""
    kept: dict[str, list[Path]] = {}
    taken: dict[str, list[Path]] = {}
    for label in sorted(classes):
        files = sorted(classes[label])
        rng.shuffle(files)
        count = max(1, round(len(files) * fraction)) if fraction > 0 and len(files) > 1 else 0
        taken[label], kept[label] = sorted(files[:count]), sorted(files[count:])
    return kept, taken


def plan_split(data_dir: Path, fractions: SplitFractions) -> Split:
    """The channels to upload, from whichever layout `data_dir` has (see the module doc)."""
    if not data_dir.is_dir():
        raise CloudError(f"--data {data_dir} is not a folder")
    rng = random.Random(fractions.seed)
    train = class_folders(data_dir / "train")
    valid = class_folders(data_dir / "valid")
    test = class_folders(data_dir / "test")
    if train and valid:
        channels = {"train": train, "valid": valid, "test": test}
        return {name: classes for name, classes in channels.items() if classes}
    if train:
        if not test:
            train, test = take_share(train, fractions.test, rng)
        train, valid = take_share(train, fractions.valid, rng)
        return {"train": train, "valid": valid, "test": test}
    flat = files_by_name_prefix(data_dir) or files_by_name_prefix(data_dir / "train")
    if len(flat) > 1:
        rest, test = take_share(flat, fractions.test, rng)
        train, valid = take_share(rest, fractions.valid / (1 - fractions.test), rng)
        return {"train": train, "valid": valid, "test": test}
    raise CloudError(
        f"no labelled images in {data_dir}: expected train/ and valid/ ImageFolders, "
        "train/<class>/ (+ test/<class>/) folders, or flat cat.N.jpg/dog.N.jpg files"
    )


def object_keys(target: AwsTarget, split: Split) -> dict[str, Path]:
    """S3 key -> local file, as `<prefix>/data/<channel>/<class>/<file name>`."""
    return {
        f"{target.prefix}/data/{channel}/{label}/{path.name}": path
        for channel, classes in split.items()
        for label, files in classes.items()
        for path in files
    }


def existing_sizes(target: AwsTarget, prefix: str) -> dict[str, int]:
    """S3 key -> size, for the objects under `prefix` in the target's bucket."""
    listed = s3_objects(target.session.client("s3"), f"s3://{target.bucket}/{prefix}")
    return {prefix + name: size for name, size in listed.items()}


def upload_files(target: AwsTarget, files: dict[str, Path], workers: int) -> None:
    s3 = target.session.client("s3")  # boto3 clients are thread-safe

    def upload(item: tuple[str, Path]) -> None:
        key, path = item
        s3.upload_file(str(path), target.bucket, key)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(upload, files.items()))


def count_images(classes: dict[str, list[Path]]) -> str:
    return ", ".join(f"{len(files)} {label}" for label, files in sorted(classes.items()))


def keys_under(keys: Iterable[str], prefix: str) -> int:
    return sum(1 for key in keys if key.startswith(prefix))


def upload(target: AwsTarget, split: Split, workers: int) -> None:
    """Upload the channels of a `plan_split`; print one line per channel with its URI."""
    ensure_bucket(target)
    keys = object_keys(target, split)
    present = existing_sizes(target, f"{target.prefix}/data/")
    missing = {key: path for key, path in keys.items() if present.get(key) != path.stat().st_size}
    upload_files(target, missing, workers)
    for channel, classes in split.items():
        uri = f"{target.data_uri}/{channel}/"
        channel_prefix = f"{target.prefix}/data/{channel}/"
        sent = keys_under(missing, channel_prefix)
        skipped = keys_under(keys, channel_prefix) - sent
        print(f"{channel:5} {uri}  ({count_images(classes)}; {sent} uploaded, {skipped} present)")
    stale = sorted(set(present) - set(keys))
    if stale:
        print(
            f"warning: {len(stale)} objects under {target.data_uri}/ are not in this split "
            f"(another seed or data set?), e.g. {stale[0]}: use another --prefix to start clean"
        )
