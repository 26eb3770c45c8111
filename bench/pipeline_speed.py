"""Backbone and input-pipeline throughput (images/s) on this machine's device.

    python bench/pipeline_speed.py [--data DIR] [--images 256] [--image-size 224]
                                   [--batch-size 64] [--repeats 3]

On the first --images photos of the train channel, medians of --repeats passes:
  - raw forward, textbook: torchvision's ResNet50 as built (default memory format,
    BatchNorm layers kept, fp32), on preprocessed images already on the device;
  - raw forward, project:  the training job's backbone (BatchNorm folded, channels_last,
    autocast as amp=auto picks), on the same tensors;
  - pipeline, project:     what feature extraction runs: decode and resize in
    num_workers processes, copy to the device, forward (trainer.sources.ImageFeatures).
Ratios: the project's forward against the textbook's, and the pipeline against the raw
forward (1.00 means decoding keeps the backbone busy; below that, the input is the
bottleneck). On a GPU this is the pipeline-versus-forward measurement of issue 4.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torchvision
from photos import add_data_argument, missing
from torch import nn

from model_artifact.preprocessing import Preprocessing, eval_transform
from trainer.data import Channel, ImageDataset, scan_channel
from trainer.hyperparameters import default_num_workers
from trainer.model import build_backbone
from trainer.runtime import Runtime, select_runtime
from trainer.sources import ImageFeatures, backbone_features


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(run: Callable[[], int], device: torch.device, repeats: int) -> float:
    """Median throughput of `run` (which returns how many images it processed)."""
    run()  # warm-up: lazy initialisation, allocator, cuDNN autotuning
    rates = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        count = run()
        synchronize(device)
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def textbook_backbone(device: torch.device) -> nn.Module:
    network = torchvision.models.resnet50()
    network.fc = nn.Identity()  # type: ignore[assignment]
    return network.eval().requires_grad_(False).to(device)


def photos(channel: Channel, image_size: int) -> ImageDataset:
    transform = eval_transform(Preprocessing.for_image_size(image_size))
    return ImageDataset(channel, transform, image_size)


def preprocessed(channel: Channel, image_size: int, batch_size: int) -> list[torch.Tensor]:
    dataset = photos(channel, image_size)
    images = torch.stack([dataset[index][0] for index in range(len(dataset))])
    return list(images.split(batch_size))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_argument(parser)
    parser.add_argument("--images", type=int, default=256, help="(default: 256)")
    parser.add_argument("--image-size", type=int, default=224, help="(default: 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    parser.add_argument("--repeats", type=int, default=3, help="(default: 3)")
    args = parser.parse_args()
    if missing(args.data):
        return 0

    runtime: Runtime = select_runtime("auto")
    device = runtime.device
    train = scan_channel("train", args.data / "train")
    channel = Channel(train.name, train.root, train.classes, train.samples[: args.images])
    batches = [
        batch.to(device) for batch in preprocessed(channel, args.image_size, args.batch_size)
    ]
    count = len(channel)

    textbook = textbook_backbone(device)
    project = build_backbone(pretrained=False).to(device).to(memory_format=torch.channels_last)

    @torch.no_grad()
    def textbook_forward() -> int:
        for batch in batches:
            textbook(batch)
        return count

    def project_forward() -> int:
        for batch in batches:
            backbone_features(project, batch, runtime)
        return count

    workers = default_num_workers()
    source = ImageFeatures(
        photos(channel, args.image_size),
        project,
        runtime,
        workers,
    )

    def pipeline() -> int:
        for _features, _labels in source.batches(range(count), args.batch_size):
            pass
        return count

    rates = {
        "raw forward, textbook": images_per_second(textbook_forward, device, args.repeats),
        "raw forward, project": images_per_second(project_forward, device, args.repeats),
        "pipeline, project": images_per_second(pipeline, device, args.repeats),
    }
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    print(
        f"{name}; {runtime.describe()}; {count} photos at {args.image_size} px, batch "
        f"{args.batch_size}, {workers} decode workers; medians of {args.repeats} passes\n"
    )
    print("| measurement | images/s | ratio |")
    print("| --- | ---: | ---: |")
    project_rate = rates["raw forward, project"]
    ratios = {
        "raw forward, textbook": "1.00",
        "raw forward, project": f"{project_rate / rates['raw forward, textbook']:.2f}x textbook",
        "pipeline, project": f"{rates['pipeline, project'] / project_rate:.2f} of raw forward",
    }
    for measurement, rate in rates.items():
        print(f"| {measurement} | {rate:.1f} | {ratios[measurement]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
