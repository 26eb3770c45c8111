"""The training job as SageMaker runs it: the real `train` command in a fake /opt/ml, as a
process and (make test-images) in the training image with no network."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from launch.synthetic_images import make_dataset, make_image_folder
from model_artifact.preprocessing import Preprocessing, eval_transform, open_rgb
from support.jobs import failure_reason, train_tiny, write_debug_hook_config
from support.targets import CONTAINER, PROCESS, Target
from trainer.metrics import parse_metrics
from trainer.onnx_export import AGREEMENT_IMAGES, CALIBRATION_IMAGES

pytestmark = pytest.mark.contract


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), per_class=12)


@pytest.fixture(scope="module")
def job(data: Path, target: Target, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One successful job with a test channel, a Debugger hook config and the ONNX graphs;
    (job dir, log)."""
    job_dir = tmp_path_factory.mktemp("job")
    write_debug_hook_config(job_dir, seen_as=target.base_dir(job_dir))
    completed = train_tiny(data, job_dir, target=target, epochs="3", lr="0.01", onnx="on")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return job_dir, completed.stdout + completed.stderr


def test_artifacts_and_outputs_are_written(job: tuple[Path, str]) -> None:
    job_dir, _ = job
    config = json.loads((job_dir / "model" / "model_config.json").read_text())
    assert (job_dir / "model" / config["model_file"]).is_file()
    assert config["classes"] == ["cat", "dog"]
    assert config["preprocessing"]["image_size"] == 64
    assert config["hyperparameters"]["lr"] == 0.01
    assert config["architecture"]["head"] == [2048, 256, 2]
    assert {"torch", "torchvision", "python"} <= set(config["versions"])
    assert {"valid_accuracy", "test_accuracy"} <= set(config["metrics"])
    history = json.loads((job_dir / "output" / "data" / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    png = (job_dir / "output" / "data" / "training_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (job_dir / "output" / "success").exists()
    assert not (job_dir / "output" / "failure").exists()


def test_metric_lines_match_the_metric_definitions(job: tuple[Path, str]) -> None:
    job_dir, log = job
    found = parse_metrics(log)
    history = json.loads((job_dir / "output" / "data" / "metrics.json").read_text())
    assert found["valid:accuracy"] == pytest.approx(
        [row["valid_accuracy"] for row in history], abs=1e-4
    )
    assert found["train:loss"] == pytest.approx([row["train_loss"] for row in history], abs=1e-4)
    assert len(found["test:accuracy"]) == 1
    assert len(found["test:loss"]) == 1


def test_reloaded_artifact_reproduces_the_reported_accuracy(
    job: tuple[Path, str], data: Path
) -> None:
    """Serving's view: the TorchScript file + model_config.json, no training code."""
    job_dir, _ = job
    config = json.loads((job_dir / "model" / "model_config.json").read_text())
    assert config["export_check_max_abs_diff"] < 1e-5
    model = torch.jit.load(str(job_dir / "model" / config["model_file"]), map_location="cpu")
    transform = eval_transform(Preprocessing.from_dict(config["preprocessing"]))
    files = sorted((data / "valid").glob("*/*.jpg"))
    images = torch.stack([transform(open_rgb(path)) for path in files])
    labels = torch.tensor([config["classes"].index(path.parent.name) for path in files])
    with torch.no_grad():
        logits = model(images)
        single = model(images[:1])  # the batch dimension is dynamic
    accuracy = float((logits.argmax(1) == labels).float().mean())
    assert accuracy == pytest.approx(config["metrics"]["valid_accuracy"], abs=1e-6)
    assert torch.allclose(single, logits[:1], atol=1e-4)


def test_onnx_graphs_reproduce_the_reported_accuracy(job: tuple[Path, str], data: Path) -> None:
    """A CPU runtime's view: the ONNX graphs and model_config.json, onnxruntime, no torch."""
    job_dir, _ = job
    model_dir = job_dir / "model"
    config = json.loads((model_dir / "model_config.json").read_text())
    onnx = config["onnx"]
    assert onnx["check_max_abs_diff"] < 1e-4
    transform = eval_transform(Preprocessing.from_dict(config["preprocessing"]))
    files = sorted((data / "valid").glob("*/*.jpg"))
    images = torch.stack([transform(open_rgb(path)) for path in files]).numpy()
    labels = np.array([config["classes"].index(path.parent.name) for path in files])
    graph = onnxruntime.InferenceSession(str(model_dir / onnx["file"]))
    (logits,) = graph.run([onnx["output"]], {onnx["input"]: images})
    accuracy = float((logits.argmax(1) == labels).mean())
    assert accuracy == pytest.approx(config["metrics"]["valid_accuracy"], abs=1e-6)

    int8 = onnx["int8"]
    assert int8["calibration_images"] == min(CALIBRATION_IMAGES, 24)  # of 24 train images
    assert int8["agreement"]["images"] == min(AGREEMENT_IMAGES, len(files))
    quantized = onnxruntime.InferenceSession(str(model_dir / int8["file"]))
    (int8_logits,) = quantized.run([onnx["output"]], {onnx["input"]: images})
    same = float((int8_logits.argmax(1) == logits.argmax(1)).mean())
    assert same == pytest.approx(int8["agreement"]["top1"])


def test_debugger_records_train_and_eval_losses(job: tuple[Path, str]) -> None:
    from smdebug.core.modes import ModeKeys  # noqa: PLC0415
    from smdebug.trials import create_trial  # noqa: PLC0415 - slow import

    job_dir, _ = job
    trial = create_trial(str(job_dir / "output" / "tensors"))
    losses = trial.tensor_names(collection="losses")
    assert losses
    loss = trial.tensor(losses[0])
    assert loss.steps(mode=ModeKeys.TRAIN)
    assert loss.steps(mode=ModeKeys.EVAL)
    assert all(
        torch.isfinite(torch.tensor(loss.value(step, mode=ModeKeys.TRAIN)))
        for step in loss.steps(mode=ModeKeys.TRAIN)
    )


def _as_is(data: Path, root: Path) -> Path:
    return data


def _without_valid(data: Path, root: Path) -> Path:
    root.mkdir()
    (root / "train").symlink_to(data / "train")
    return root


def _with_empty_class(data: Path, root: Path) -> Path:
    make_image_folder(root / "train", per_class=3)
    (root / "train" / "bird").mkdir()
    (root / "valid").symlink_to(data / "valid")
    return root


def _with_unknown_valid_class(data: Path, root: Path) -> Path:
    root.mkdir()
    (root / "train").symlink_to(data / "train")
    make_image_folder(root / "valid", per_class=2, classes=("cat", "fox"))
    return root


def _with_corrupt_images(data: Path, root: Path) -> Path:
    make_image_folder(root / "train", per_class=10)
    for index in range(3):  # 3 of 23 files: 13%
        (root / "train" / "cat" / f"corrupt{index}.jpg").write_bytes(b"\xff\xd8\xff broken")
    (root / "valid").symlink_to(data / "valid")
    return root


CLIENT_ERRORS = {
    "missing-valid": (_without_valid, {}, "channel 'valid' is missing"),
    "empty-class": (_with_empty_class, {}, "class 'bird' in channel 'train' is empty"),
    "unknown-class": (
        _with_unknown_valid_class,
        {},
        "channel 'valid' has classes the train channel lacks: fox",
    ),
    "corrupt-images": (_with_corrupt_images, {}, "3 of 23 files (13%) are not decodable images"),
    "bad-lr": (_as_is, {"lr": "fast"}, "hyperparameter lr='fast' is invalid"),
    "bad-batch-size": (
        _as_is,
        {"batch_size": "0"},
        "hyperparameter batch_size='0' is out of range",
    ),
}
# Every case as a process; in the image, the one that shows its failure path works there.
CLIENT_ERROR_RUNS = [
    *(pytest.param(PROCESS, *case, id=f"{PROCESS}-{name}") for name, case in CLIENT_ERRORS.items()),
    pytest.param(
        CONTAINER, *CLIENT_ERRORS["bad-lr"], id=f"{CONTAINER}-bad-lr", marks=pytest.mark.images
    ),
]


@pytest.mark.parametrize(
    ("target", "make_data", "hyperparameters", "reason"), CLIENT_ERROR_RUNS, indirect=["target"]
)
def test_client_errors_fail_with_a_one_line_reason(
    data: Path,
    tmp_path: Path,
    target: Target,
    make_data: Callable[[Path, Path], Path],
    hyperparameters: dict[str, str],
    reason: str,
) -> None:
    dataset = make_data(data, tmp_path / "data")
    completed = train_tiny(dataset, tmp_path / "job", target=target, **hyperparameters)
    assert completed.returncode != 0
    written = failure_reason(tmp_path / "job")
    assert reason in written
    assert "\n" not in written.strip()
    assert "Traceback" not in written


def test_pretrained_without_weights_names_the_fix(
    data: Path, tmp_path: Path, target: Target
) -> None:
    """As a process, TORCH_HOME without the weights; the image `make test-images` builds
    has none baked in (BAKE_WEIGHTS=false), and no network to download them."""
    env = {"TORCH_HOME": str(tmp_path / "no-weights")} if target.name == PROCESS else {}
    completed = train_tiny(data, tmp_path / "job", env=env, target=target, pretrained="true")
    assert completed.returncode != 0
    written = failure_reason(tmp_path / "job")
    assert "ResNet50 ImageNet weights not found" in written
    assert "pretrained=false" in written
