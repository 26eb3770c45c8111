"""build_and_push.sh end to end: the AWS half against the emulator, the Docker half for
real with the engine of `make test-images`, pushing to a registry on 127.0.0.1 that stands
in for ECR's. The image is then pulled back by its digest and runs a training job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from launch.synthetic_images import make_dataset
from serving.contract import TORCH
from support import containers
from support.jobs import train_tiny
from support.registry import IMAGE_MANIFEST_TYPES, local_registry, manifest
from support.targets import ContainerTarget
from trainer.contract import TrainingPaths

pytestmark = pytest.mark.images

REPO_ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "image-classifier-train"  # build_and_push.sh's name for the training image
TAG = "pushed"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    work_dir = tmp_path / "registry"
    work_dir.mkdir()
    with local_registry(work_dir) as address:
        yield address


def build_and_push(registry: str, images_file: Path, work_dir: Path) -> None:
    """The training image, with the build arguments `make test-images` built it with (so
    the build itself comes from the engine's cache)."""
    stand_ins = containers.image_from_env(containers.STAND_INS_ENV).split()
    command = [
        str(REPO_ROOT / "build_and_push.sh"), "train", "--gpu", "--tag", TAG,
        "--registry", registry, "--images-file", str(images_file), "--build-network", "host",
        *(word for value in stand_ins for word in ("--build-arg", value)),
    ]  # fmt: skip
    environment = {
        **os.environ,
        # The engine's client stays first; aws comes from this venv.
        "PATH": os.pathsep.join([os.environ["PATH"], str(Path(sys.executable).parent)]),
        "DOCKER_CONFIG": str(work_dir / "docker-config"),  # where `docker login` writes
    }
    result = subprocess.run(
        command,
        cwd=work_dir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_pushed_image_is_one_manifest_and_pulled_by_digest_it_trains(
    aws: str, registry: str, tmp_path: Path
) -> None:
    images_file = tmp_path / "images.json"
    build_and_push(registry, images_file, tmp_path)
    uri = json.loads(images_file.read_text())["train"]
    assert uri == f"{registry}/{REPOSITORY}:{TAG}"
    ecr = boto3.client("ecr")
    assert [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]] == [
        REPOSITORY
    ]

    # A single image manifest, as SageMaker requires, not a list with an attestation.
    media_type, digest, body = manifest(registry, REPOSITORY, TAG)
    assert media_type in IMAGE_MANIFEST_TYPES
    assert body["layers"]

    # Gone from the engine, its layers too (the build cache holds them as well), then
    # pulled back by digest: the same image.
    image_id = containers.docker("image", "inspect", "--format", "{{.Id}}", uri)
    containers.docker("image", "rm", "--force", image_id)
    containers.docker("builder", "prune", "--all", "--force")
    assert not containers.docker("image", "ls", "--quiet", "--filter", f"reference={uri}")
    pulled = f"{registry}/{REPOSITORY}@{digest}"
    containers.docker("pull", pulled, timeout=1200)
    assert containers.docker("image", "inspect", "--format", "{{.Id}}", pulled) == image_id
    # The name the other container tests use, back on the same image.
    containers.docker("tag", pulled, containers.image_from_env(containers.TRAIN_IMAGE_ENV))

    target = ContainerTarget(
        train_image=pulled,
        serve_images={TORCH: containers.image_from_env(containers.SERVE_IMAGE_ENV)},
    )
    data = make_dataset(tmp_path / "data", per_class=4)
    completed = train_tiny(data, tmp_path / "job", target=target, epochs="1")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert TrainingPaths(tmp_path / "job").success_file.exists()
