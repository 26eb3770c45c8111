"""The ONNX graphs of a model directory, on a tiny network and a few generated images."""

from __future__ import annotations

import shutil
import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto

from launch.synthetic_images import make_image_folder
from model_artifact.config import (
    CONFIG_FILE,
    MODEL_FILE,
    ONNX_FILE,
    ONNX_INPUT,
    ONNX_INT8_FILE,
    ONNX_OUTPUT,
    read_config,
)
from model_artifact.preprocessing import eval_transform, open_rgb
from model_artifact.torchscript import load_model
from support.tiny_models import write_model_dir
from trainer import export_cli, onnx_export
from trainer.data import Channel, scan_channel
from trainer.onnx_export import (
    AGREEMENT_IMAGES,
    CALIBRATION_IMAGES,
    export_onnx,
    export_onnx_after_training,
)
from trainer.quantization import agreement, onnx_logits
from trainer.samples import sample_images, spread_order

REPO_ROOT = Path(__file__).resolve().parents[2]


def _channels(data: Path) -> dict[str, Channel]:
    train = scan_channel("train", data / "train")
    return {"train": train, "valid": scan_channel("valid", data / "valid", train.classes)}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_image_folder(root / "train", per_class=20)
    make_image_folder(root / "valid", per_class=5, seed=1)
    return root


@pytest.fixture(scope="module")
def exported(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TinyNet model directory with both graphs, as the training job leaves it."""
    model_dir = write_model_dir(tmp_path_factory.mktemp("model"))
    export_onnx(model_dir, read_config(model_dir), _channels(data))
    return model_dir


def _torchscript_logits(model_dir: Path, images: np.ndarray) -> np.ndarray:
    network = load_model(model_dir, read_config(model_dir))
    with torch.no_grad():
        return network(torch.from_numpy(images)).numpy()


def test_spread_order_takes_the_classes_in_turn_and_every_item_once(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train", per_class=6)
    for extra in sorted((tmp_path / "train" / "dog").iterdir())[2:]:
        extra.unlink()  # 6 cats, 2 dogs
    channel = scan_channel("train", tmp_path / "train")
    order = list(spread_order(channel))
    assert sorted(order) == list(range(len(channel)))
    assert [channel.samples[index][1] for index in order] == [0, 1, 0, 1, 0, 0, 0, 0]
    assert list(spread_order(channel)) == order
    assert list(spread_order(channel, seed=1)) != order


def test_a_sample_is_preprocessed_skips_unreadable_files_and_stops_at_the_limit(
    tmp_path: Path,
) -> None:
    make_image_folder(tmp_path / "valid", per_class=4)
    for index in range(3):
        (tmp_path / "valid" / "cat" / f"0-broken{index}.jpg").write_bytes(b"\xff\xd8\xff broken")
    channel = scan_channel("valid", tmp_path / "valid")
    config = read_config(write_model_dir(tmp_path / "model"))

    sample = sample_images(channel, 6, config.preprocessing)

    assert len(sample) == 6
    assert sample.images.shape == (6, 3, 32, 32) and sample.images.dtype == np.float32
    assert sorted(sample.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    readable = [
        index for index in spread_order(channel) if "broken" not in str(channel.samples[index][0])
    ]
    first = channel.samples[readable[0]][0]
    expected = eval_transform(config.preprocessing)(open_rgb(first)).numpy()
    np.testing.assert_array_equal(sample.images[0], expected)
    assert len(sample_images(channel, 100, config.preprocessing)) == len(channel) - 3


def test_agreement_counts_top1_per_true_class_and_the_largest_probability_change() -> None:
    fp32 = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    int8 = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array([0, 1, 0, 1])

    measured = agreement(fp32, int8, labels, ("cat", "dog"))

    assert measured.images == 4
    assert measured.top1 == 0.75
    assert measured.per_class_top1 == {"cat": 0.5, "dog": 1.0}
    flipped = 1 / (1 + np.exp(-1.0)) - 1 / (1 + np.exp(1.0))  # softmax([1, 0]) - softmax([0, 1])
    assert measured.max_prob_diff == pytest.approx(flipped)


def test_the_fp32_graph_has_the_artifacts_interface_and_computes_what_model_pt_does(
    exported: Path, data: Path
) -> None:
    config = read_config(exported)
    assert config.onnx is not None and config.onnx.file == ONNX_FILE
    assert config.onnx.check_max_abs_diff is not None and config.onnx.check_max_abs_diff < 1e-4
    session = onnxruntime.InferenceSession(str(exported / ONNX_FILE))
    (graph_input,) = session.get_inputs()
    assert (graph_input.name, graph_input.shape[1:]) == (ONNX_INPUT, [3, 32, 32])
    assert isinstance(graph_input.shape[0], str)  # a dynamic batch
    assert [output.name for output in session.get_outputs()] == [ONNX_OUTPUT]
    images = sample_images(_channels(data)["valid"], 5, config.preprocessing).images
    for batch in (images[:1], images):
        (logits,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})
        assert logits.shape == (len(batch), 2)
        np.testing.assert_allclose(logits, _torchscript_logits(exported, batch), atol=1e-4)


def test_the_int8_graph_is_calibrated_and_its_recorded_agreement_is_its_own(
    exported: Path, data: Path
) -> None:
    config = read_config(exported)
    assert config.onnx is not None and config.onnx.int8 is not None
    int8 = config.onnx.int8
    assert int8.file == ONNX_INT8_FILE
    assert int8.calibration_images == min(CALIBRATION_IMAGES, 40)
    valid = _channels(data)["valid"]
    held_out = sample_images(valid, AGREEMENT_IMAGES, config.preprocessing)
    assert int8.agreement.images == len(held_out) == 10
    measured = agreement(
        onnx_logits(exported / ONNX_FILE, held_out.images),
        onnx_logits(exported / ONNX_INT8_FILE, held_out.images),
        held_out.labels,
        config.classes,
    )
    assert int8.agreement == pytest.approx(measured)
    assert set(int8.agreement.per_class_top1) == {"cat", "dog"}


def test_the_int8_graph_quantizes_weights_per_channel_and_activations_unsigned(
    exported: Path,
) -> None:
    graph = onnx.load(str(exported / ONNX_INT8_FILE)).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    dequantized = [node for node in graph.node if node.op_type == "DequantizeLinear"]
    quantized = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    assert quantized and dequantized
    conv = next(node for node in graph.node if node.op_type == "Conv")
    weight = next(node for node in dequantized if node.output[0] == conv.input[1])
    assert initializers[weight.input[0]].data_type == TensorProto.INT8
    assert list(initializers[weight.input[1]].dims) == [4]  # one scale per output channel
    zero_point = initializers[quantized[0].input[2]]
    assert zero_point.data_type == TensorProto.UINT8


def test_without_images_only_a_checked_fp32_graph_is_written(
    exported: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(exported, model_dir)  # its int8 graph is now stale

    written = export_onnx(model_dir, read_config(model_dir))

    assert written.onnx is not None and written.onnx.int8 is None
    assert written.onnx.check_max_abs_diff is not None and written.onnx.check_max_abs_diff < 1e-4
    assert read_config(model_dir) == written
    assert (model_dir / ONNX_FILE).is_file()
    assert not (model_dir / ONNX_INT8_FILE).exists()


def test_an_export_that_fails_half_way_leaves_a_config_that_names_no_graph(
    exported: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(exported, model_dir)

    def broken(*args: object) -> None:
        raise RuntimeError("quantization broke")

    monkeypatch.setattr(onnx_export, "quantize_int8", broken)
    with pytest.raises(RuntimeError, match="quantization broke"):
        export_onnx(model_dir, read_config(model_dir), _channels(data))

    config = read_config(model_dir)  # still servable from model.pt
    assert config.onnx is None
    assert (model_dir / MODEL_FILE).is_file()
    assert not list(model_dir.glob("*.tmp"))


def test_a_failed_onnx_step_does_not_fail_the_training_job(
    exported: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(exported, model_dir)

    def broken(*args: object) -> None:
        raise RuntimeError("quantization broke")

    monkeypatch.setattr(onnx_export, "quantize_int8", broken)
    written = export_onnx_after_training(model_dir, read_config(model_dir), _channels(data))

    assert written.onnx is None
    assert read_config(model_dir) == written


def test_the_export_command_writes_the_graphs_of_a_model_directory(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = write_model_dir(tmp_path / "model")

    assert export_cli.main(["--model-dir", str(model_dir), "--data", str(data)]) == 0

    config = read_config(model_dir)
    assert config.onnx is not None and config.onnx.int8 is not None
    assert (model_dir / ONNX_INT8_FILE).is_file()
    assert str(model_dir) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("no-model", "does not exist"),
        ("no-config", f"{CONFIG_FILE} is missing"),
        ("no-valid", "channel 'valid' is missing"),
        ("unknown-class", "channel 'train' has classes the model lacks: fox"),
    ],
)
def test_the_export_command_fails_with_a_one_line_reason(
    problem: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = write_model_dir(tmp_path / "model")
    data = tmp_path / "data"
    make_image_folder(data / "train", per_class=2, classes=("cat", "dog"))
    make_image_folder(data / "valid", per_class=2, classes=("cat", "dog"))
    if problem == "no-model":
        model_dir = tmp_path / "elsewhere"
    elif problem == "no-config":
        (model_dir / CONFIG_FILE).unlink()
    elif problem == "no-valid":
        shutil.rmtree(data / "valid")
    else:
        make_image_folder(data / "train", per_class=2, classes=("fox",))

    assert export_cli.main(["--model-dir", str(model_dir), "--data", str(data)]) == 1

    error = capsys.readouterr().err
    assert reason in error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "model" / ONNX_FILE).exists()


def test_export_onnx_is_a_command_of_the_trainer_package() -> None:
    project = tomllib.loads((REPO_ROOT / "container_train" / "pyproject.toml").read_text())
    module, _, function = project["project"]["scripts"]["export-onnx"].partition(":")
    assert getattr(import_module(module), function) is export_cli.main
