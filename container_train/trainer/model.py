"""The classifier: a torchvision ResNet50 backbone and a two-layer head.

By default (`train_layers=head`) the whole backbone is frozen; with `layer4`, `layer3` or
`all` the backbone splits into a frozen front and trainable stages (`build_stages`).

Pure model definition, no I/O beyond loading the ImageNet weights. Serving never
imports this: it loads the TorchScript file the training job exports.

torchvision is imported where a backbone is built, not at module import: it costs
about 3 s (it pulls in torch._dynamo), and a tuning trial that finds the backbone and
all features in the cache never builds one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from trainer.errors import ClientError

if TYPE_CHECKING:
    from torchvision.models import ResNet50_Weights

BACKBONE = "resnet50"
PRETRAINED_WEIGHTS = "IMAGENET1K_V2"  # a member of torchvision's ResNet50_Weights
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
        # The backbone is a fixed function: the feature cache relies on it, and dropout or
        # similar layers inside it must not switch on while the head trains.
        super().train(mode)
        self.backbone.eval()
        return self


def architecture(
    pretrained: bool,
    hidden_units: int,
    dropout: float,
    num_classes: int,
    train_layers: str = "head",
) -> dict[str, object]:
    """What `build_backbone` (or `build_stages`) and `build_head` make, for the model's config."""
    first = _first_trained(train_layers)
    frozen = "all convolutional layers" if first is None else " ".join(STAGES[:first]) or "none"
    described: dict[str, object] = {
        "backbone": BACKBONE,
        "weights": PRETRAINED_WEIGHTS if pretrained else None,
        "frozen": frozen,
        "head": [FEATURE_DIM, hidden_units, num_classes],
        "dropout": dropout,
    }
    if first is not None:
        described["trained"] = f"{' '.join(STAGES[first:])} (BatchNorm statistics frozen)"
    return described


# ResNet50's children in forward order, up to global pooling.
STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _first_trained(train_layers: str) -> int | None:
    """Index in STAGES of the first stage that trains; None when only the head trains."""
    if train_layers == "head":
        return None
    return 0 if train_layers == "all" else STAGES.index(train_layers)


def frozen_through(train_layers: str) -> str:
    """The last frozen stage (what the feature cache stores the output of), or ''."""
    first = _first_trained(train_layers)
    return STAGES[-1] if first is None else (STAGES[first - 1] if first else "")


class TrainableStages(nn.Module):
    """The backbone stages that train, then global pooling: (N, C, H, W) -> (N, 2048).

    BatchNorm keeps its ImageNet statistics (the layers stay in eval mode while their
    scale and shift train): per-worker batches are small (a global batch of 64 on 4 GPUs is
    16 each), so batch statistics would be noisy and would depend on the number of
    workers; frozen ones give every worker count the same function, need no collective
    per layer, and fold into the convolutions at export like the frozen stages.
    """

    def __init__(self, stages: nn.Module) -> None:
        super().__init__()
        self.stages = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(features))

    def train(self, mode: bool = True) -> TrainableStages:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def folded(self) -> nn.Module:
        """The same function with each BatchNorm folded into its convolution (for export)."""
        return fuse(self.eval()).eval()


def build_stages(pretrained: bool, train_layers: str) -> tuple[nn.Module, TrainableStages]:
    """(frozen front, trainable stages) of ResNet50 for `train_layers` other than head.

    The front is frozen with BatchNorm folded, as in `build_backbone` (nn.Identity when
    everything trains); the trainable stages keep their BatchNorm layers (frozen
    statistics, see TrainableStages).
    """
    from torchvision.models import resnet50  # noqa: PLC0415 - see the module docstring

    first = _first_trained(train_layers)
    assert first is not None, "train_layers=head uses build_backbone"
    network = resnet50(weights=load_pretrained_weights() if pretrained else None).eval()
    children = [getattr(network, name) for name in STAGES]
    front: nn.Module = nn.Identity()
    if first:
        front = fuse(nn.Sequential(*children[:first]).eval()).requires_grad_(False).eval()
    return front, TrainableStages(nn.Sequential(*children[first:])).train()


def backbone_weights(pretrained: bool, seed: int) -> str:
    """Names the backbone's weights: ImageNet's, or a random init (which the seed decides)."""
    return PRETRAINED_WEIGHTS if pretrained else f"random-init-seed-{seed}"


def build_head(num_classes: int, hidden_units: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(FEATURE_DIM, hidden_units),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_units, num_classes),
    )


def build_backbone(pretrained: bool) -> nn.Module:
    """ResNet50 up to global pooling, every parameter frozen, BatchNorm folded away.

    Frozen and in eval mode, each BatchNorm is a fixed per-channel affine map, so it is
    folded into the weights of the convolution before it: the same function (to float
    rounding) for less compute (bench/pipeline_speed.py), in training, feature extraction
    and serving.
    """
    from torchvision.models import resnet50  # noqa: PLC0415 - see the module docstring

    network = resnet50(weights=load_pretrained_weights() if pretrained else None)
    network.fc = nn.Identity()  # type: ignore[assignment]
    return fuse(network.eval()).requires_grad_(False).eval()


def pretrained_weights() -> ResNet50_Weights:
    from torchvision.models import ResNet50_Weights  # noqa: PLC0415 - see the module docstring

    return ResNet50_Weights[PRETRAINED_WEIGHTS]


def weights_path() -> Path:
    """Where torchvision keeps the ImageNet weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(pretrained_weights().url).name


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
    return pretrained_weights()


def fetch_pretrained_weights() -> Path:
    """Download the weights into TORCH_HOME (run at image build time)."""
    pretrained_weights().get_state_dict(progress=os.isatty(2), check_hash=True)
    return weights_path()
