"""The classifier: a frozen torchvision ResNet50 backbone and a two-layer head.

Pure model definition, no I/O beyond loading the ImageNet weights. Serving never
imports this: it loads the TorchScript artifact the training job exports.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from trainer.errors import ClientError

PRETRAINED_WEIGHTS = ResNet50_Weights.IMAGENET1K_V2
FEATURE_DIM = 2048  # ResNet50's pooled feature width


class ImageClassifier(nn.Module):
    """backbone (frozen, always in eval mode) -> 2048 features -> head -> class logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.eval()  # see train()
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def train(self, mode: bool = True) -> ImageClassifier:
        # The backbone's BatchNorm statistics must not drift: they belong to the frozen
        # weights, and the feature cache relies on the backbone being a fixed function.
        super().train(mode)
        self.backbone.eval()
        return self


def build_head(num_classes: int, hidden_units: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(FEATURE_DIM, hidden_units),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_units, num_classes),
    )


def build_backbone(pretrained: bool) -> nn.Module:
    """ResNet50 up to global pooling, every parameter frozen."""
    network = resnet50(weights=load_pretrained_weights() if pretrained else None)
    network.fc = nn.Identity()  # type: ignore[assignment]
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def build_model(
    num_classes: int, hidden_units: int = 256, dropout: float = 0.2, pretrained: bool = True
) -> ImageClassifier:
    return ImageClassifier(
        build_backbone(pretrained), build_head(num_classes, hidden_units, dropout)
    )


def weights_path() -> Path:
    """Where torchvision keeps the ImageNet weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(PRETRAINED_WEIGHTS.url).name


def load_pretrained_weights() -> ResNet50_Weights:
    """Make sure the ImageNet weights are on disk (the training image bakes them in)."""
    if not weights_path().is_file():
        try:
            fetch_pretrained_weights()
        except Exception as error:
            raise ClientError(
                f"ResNet50 ImageNet weights not found at {weights_path()} and the download "
                f"failed ({type(error).__name__}); use the training image, which bakes them "
                f"in, set TORCH_HOME to a folder that has them, or set pretrained=false"
            ) from error
    return PRETRAINED_WEIGHTS


def fetch_pretrained_weights() -> Path:
    """Download the weights into TORCH_HOME (run at image build time)."""
    PRETRAINED_WEIGHTS.get_state_dict(progress=os.isatty(2), check_hash=True)
    return weights_path()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]
