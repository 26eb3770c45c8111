import torch
import torchvision

from trainer.model import (
    FEATURE_DIM,
    ImageClassifier,
    architecture,
    build_backbone,
    build_head,
    build_stages,
)


def build_model(num_classes: int, hidden_units: int, dropout: float = 0.2) -> ImageClassifier:
    head = build_head(num_classes, hidden_units, dropout)
    return ImageClassifier(build_backbone(pretrained=False), head)


def test_shapes_and_head_layout() -> None:
    model = build_model(num_classes=3, hidden_units=32, dropout=0.1).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    linear = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(FEATURE_DIM, 32), (32, 3)]


def test_only_the_head_trains() -> None:
    model = build_model(num_classes=2, hidden_units=16)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.head.parameters()}
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_backbone_stays_in_eval_mode() -> None:
    model = build_model(num_classes=2, hidden_units=16)
    assert not model.backbone.training
    model.train()
    assert model.head.training
    assert not model.backbone.training


def test_folding_batchnorm_keeps_the_backbone_function() -> None:
    torch.manual_seed(0)
    backbone = build_backbone(pretrained=False)
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    reference.fc = torch.nn.Identity()  # type: ignore[assignment]
    reference.eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(images)
        folded = backbone(images)
    assert expected.shape == folded.shape == (2, FEATURE_DIM)
    # The same function up to float rounding, relative to the size of the features.
    assert float((folded - expected).abs().max()) <= 1e-4 * float(expected.abs().max())


def test_architecture_describes_what_is_built() -> None:
    model = build_model(num_classes=3, hidden_units=32)
    described = architecture(pretrained=False, hidden_units=32, dropout=0.2, num_classes=3)
    linear = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert described["head"] == [linear[0].in_features, 32, linear[-1].out_features]
    assert described["weights"] is None


def test_stages_split_the_backbone_and_fold_for_export() -> None:
    torch.manual_seed(0)
    reference = build_backbone(pretrained=False)
    torch.manual_seed(0)
    front, stages = build_stages(pretrained=False, train_layers="layer4")
    assert not any(p.requires_grad for p in front.parameters())
    assert all(p.requires_grad for p in stages.parameters())
    stages.train()
    batchnorms = [m for m in stages.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and not any(m.training for m in batchnorms)  # frozen statistics
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        split = stages(front(images))
        folded = stages.folded()(front(images))
        whole = reference(images)
    scale = float(whole.abs().max())
    assert float((split - whole).abs().max()) <= 1e-4 * scale
    assert float((folded - split).abs().max()) <= 1e-4 * scale
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in stages.folded().modules())
    described = architecture(False, 32, 0.2, 3, "layer4")
    assert described["frozen"] == "conv1 bn1 relu maxpool layer1 layer2 layer3"
    assert described["trained"] == "layer4 (BatchNorm statistics frozen)"
