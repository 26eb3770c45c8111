"""What both images declare and weigh, read from the built images."""

from __future__ import annotations

import json
import os
import shlex
import tomllib
from pathlib import Path

import pytest

from support import containers
from support.dockerfile import parse_dockerfile

pytestmark = pytest.mark.images

REPO_ROOT = Path(__file__).resolve().parents[2]
# The sizes docs/images.md shows, measured on the images `make test-images` builds.
RECORDED_SIZES = REPO_ROOT / "docker" / "image-sizes.toml"
# SageMaker's limit on an image's size; the training image must stay under it.
SAGEMAKER_LIMIT_BYTES = 10 * 10**9
GROWTH_ALLOWED = 0.10
IMAGE_ENVS = {
    "train": containers.TRAIN_IMAGE_ENV,
    "serve": containers.SERVE_IMAGE_ENV,
    "serve-cpu": containers.SERVE_CPU_IMAGE_ENV,
}
DOCKERFILES = {"train": "train", "serve": "serve", "serve-cpu": "serve"}
# The CPU serving image is pulled at every cold start of a serverless endpoint.
CPU_IMAGE_GOAL_BYTES = 1.2 * 10**9


def built(name: str) -> str:
    """The image `make test-images` built for `name`, or skip (TEST_IMAGES_ONLY)."""
    if not os.environ.get(IMAGE_ENVS[name]):
        pytest.skip(f"{IMAGE_ENVS[name]} is not set: that image was not built")
    return containers.image_from_env(IMAGE_ENVS[name])


def declared_labels(name: str) -> dict[str, str]:
    """The LABELs of the Dockerfile's final stage."""
    dockerfile = parse_dockerfile(REPO_ROOT / "docker" / f"{DOCKERFILES[name]}.Dockerfile")
    labels = [i.arguments for i in dockerfile.final_stage() if i.keyword == "LABEL"]
    return dict(item.split("=", 1) for label in labels for item in shlex.split(label))


def image_labels(name: str) -> dict[str, str]:
    image = built(name)
    found = containers.docker("image", "inspect", "--format", "{{json .Config.Labels}}", image)
    return dict(json.loads(found))


@pytest.mark.parametrize("name", IMAGE_ENVS)
def test_the_image_carries_the_labels_of_its_dockerfile(name: str) -> None:
    labels = image_labels(name)
    for key, value in declared_labels(name).items():
        assert key in labels, key
        if "${" not in value:  # a build argument's value: checked where it matters
            assert labels[key] == value, key


@pytest.mark.parametrize("name", ["serve", "serve-cpu"])
def test_the_serving_image_accepts_sagemakers_port_setting(name: str) -> None:
    """SageMaker sets SAGEMAKER_BIND_TO_PORT only for an image with this label."""
    labels = image_labels(name)
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"


def test_the_cpu_serving_image_has_onnx_runtime_and_no_torch() -> None:
    image = built("serve-cpu")
    probe = "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('onnxruntime'))"
    found = containers.docker("run", "--rm", "--network", "none", image, "python", "-c", probe)
    torch, onnxruntime = found.split(" ", 1)
    assert torch == "None"
    assert onnxruntime.startswith("ModuleSpec")


def test_the_cpu_serving_image_is_under_its_size_goal() -> None:
    assert containers.image_size(built("serve-cpu")) < CPU_IMAGE_GOAL_BYTES


@pytest.mark.parametrize("name", IMAGE_ENVS)
def test_the_image_grew_at_most_10_percent_over_its_recorded_size(name: str) -> None:
    recorded = tomllib.loads(RECORDED_SIZES.read_text())["bytes"][name]
    size = containers.image_size(built(name))
    print(f"{name}: {size:,} bytes ({size / recorded - 1:+.1%} against {recorded:,})")
    assert size <= recorded * (1 + GROWTH_ALLOWED)


def test_the_training_image_is_under_sagemakers_limit() -> None:
    size = containers.image_size(built("train"))
    assert size < SAGEMAKER_LIMIT_BYTES


@pytest.mark.parametrize("name", IMAGE_ENVS)
def test_no_layer_holds_most_of_the_image(name: str) -> None:
    """An engine compresses, pushes and pulls an image's layers side by side: the CUDA
    wheels ship apart from the rest of the venv."""
    image = built(name)
    history = containers.docker("history", "--human=false", "--format", "{{.Size}}", image)
    sizes = [int(size) for size in history.split()]
    assert max(sizes) < 0.6 * sum(sizes), sorted(sizes)[-3:]
