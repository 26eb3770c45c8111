"""The textbook fine-tuning loop: the baseline that bench/train_speed.py times.

Written the way the PyTorch transfer-learning tutorial teaches it: torchvision's
ImageFolder with the standard eval transforms, a ResNet50 whose parameters are frozen
and a new two-layer head, and in every epoch the backbone runs on every training and
validation image. It does the same work as a `train` job with the same settings
(AdamW, the same head, valid every epoch, test once at the end, the head saved), with
two corrections a careful author would make: the frozen backbone stays in eval mode
(BatchNorm statistics must not drift) and its forward pass runs without autograd.

    python bench/textbook_loop.py --data DIR --out DIR [--epochs 5] [--image-size 224]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

# The same preprocessing numbers as the job's: the bench compares loops, not inputs.
from model_artifact.preprocessing import CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD


def loader(
    folder: Path, image_size: int, batch_size: int, workers: int, shuffle: bool
) -> DataLoader[tuple[torch.Tensor, int]]:
    transform = transforms.Compose(
        [
            transforms.Resize(round(image_size / CROP_RATIO)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = datasets.ImageFolder(str(folder), transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers)


def run_epoch(
    backbone: nn.Module,
    head: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[float, float]:
    """One pass; trains the head when an optimizer is given. Returns (loss, accuracy)."""
    head.train(optimizer is not None)
    loss_sum, correct, count = 0.0, 0, 0
    for images, labels in batches:
        with torch.no_grad():
            features = backbone(images)
        with torch.set_grad_enabled(optimizer is not None):
            logits = head(features)
            loss = criterion(logits, labels)
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        count += len(labels)
    return loss_sum / count, correct / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="train/valid/test ImageFolders")
    parser.add_argument("--out", type=Path, required=True, help="where the head is saved")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.manual_seed(42)

    backbone = models.resnet50()  # speed only: the weights do not change the work
    backbone.fc = nn.Identity()
    for parameter in backbone.parameters():
        parameter.requires_grad = False
    backbone.eval()
    head = nn.Sequential(nn.Linear(2048, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 2))
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss()

    def batches(split: str, shuffle: bool = False) -> DataLoader[tuple[torch.Tensor, int]]:
        return loader(args.data / split, args.image_size, args.batch_size, args.workers, shuffle)

    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        train = run_epoch(backbone, head, batches("train", shuffle=True), criterion, optimizer)
        valid = run_epoch(backbone, head, batches("valid"), criterion)
        print(
            f"epoch={epoch} train_loss={train[0]:.4f} valid_loss={valid[0]:.4f} "
            f"valid_accuracy={valid[1]:.4f} ({time.perf_counter() - started:.1f}s)",
            flush=True,
        )
    test = run_epoch(backbone, head, batches("test"), criterion)
    print(f"test_loss={test[0]:.4f} test_accuracy={test[1]:.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(head.state_dict(), args.out / "head.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
