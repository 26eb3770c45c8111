import pytest
import torch

from trainer.model import FEATURE_DIM, build_model, trainable_parameters


def test_shapes_and_head_layout() -> None:
    model = build_model(num_classes=3, hidden_units=32, dropout=0.1, pretrained=False).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    linear = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(FEATURE_DIM, 32), (32, 3)]


def test_only_the_head_trains() -> None:
    model = build_model(num_classes=2, hidden_units=16, pretrained=False)
    trainable = {id(p) for p in trainable_parameters(model)}
    assert trainable == {id(p) for p in model.head.parameters()}
    assert not any(p.requires_grad for p in model.backbone.parameters())


@pytest.mark.parametrize("mode", ["as-built", "train"])
def test_backbone_batchnorm_stays_frozen(mode: str) -> None:
    model = build_model(num_classes=2, hidden_units=16, pretrained=False)
    if mode == "train":
        model.train()
    before = model.backbone.bn1.running_mean.clone()
    model(torch.randn(4, 3, 64, 64) * 5 + 3)
    assert not model.backbone.training
    assert torch.equal(before, model.backbone.bn1.running_mean)
