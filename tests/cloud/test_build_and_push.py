"""build_and_push.sh against a local AWS API emulator (moto server mode on loopback).

The script runs for real: the AWS CLI talks to moto through AWS_ENDPOINT_URL, and
--no-docker prints the docker commands instead of running them. Each test runs a copy of
the script in a fresh git repository under tmp_path, so the commit tag is known and the
user's build/images.json is never touched.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "build_and_push.sh"
ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"  # emulator_env's region
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
VENV_BIN = str(Path(sys.executable).parent)
# What the script needs besides aws and docker (for the PATH of the "tool missing" tests).
BASE_TOOLS = [
    "bash",
    "env",
    "dirname",
    "git",
    "mktemp",
    "rm",
    "grep",
    "sed",
    "tr",
    "mkdir",
    "mv",
    "cat",
]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def commands(self, program: str = "docker") -> list[list[str]]:
        return [
            shlex.split(line) for line in self.stdout.splitlines() if line.startswith(program + " ")
        ]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The script and Dockerfiles in a fresh one-commit git repository."""
    root = tmp_path / "repo"
    (root / "docker").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / SCRIPT, root / SCRIPT)
    for dockerfile in (REPO_ROOT / "docker").glob("*.Dockerfile"):
        shutil.copy2(dockerfile, root / "docker" / dockerfile.name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "images"], cwd=root, check=True)
    return root


def commit_of(root: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def run_script(
    root: Path, *args: str, env: dict[str, str | None] | None = None, path: str | None = None
) -> Run:
    """Run the copied script with the current (emulator) environment, isolated from ~/.aws;
    `env` adds variables, or removes those given as None."""
    environment = {
        **os.environ,
        "HOME": str(root.parent),
        "AWS_CONFIG_FILE": str(root.parent / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root.parent / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "PATH": path or os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]),
    }
    for key in ("IMAGES_FILE", "IMAGE_REPO_PREFIX", "AWS_PROFILE"):
        environment.pop(key, None)
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    result = subprocess.run(
        [str(root / SCRIPT), *args],
        cwd=root.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(result.returncode, result.stdout, result.stderr)


def tools_path(directory: Path, *extra: str) -> str:
    """A PATH holding only BASE_TOOLS and `extra` (links to the real programs)."""
    directory.mkdir()
    for name in (*BASE_TOOLS, *extra):
        found = shutil.which(name, path=os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]))
        assert found, f"{name} not found"
        (directory / name).symlink_to(found)
    return str(directory)


def ecr() -> boto3.client:
    return boto3.client("ecr", region_name=REGION)


def test_all_no_docker_against_the_emulator(aws: str, checkout: Path) -> None:
    run = run_script(checkout, "all", "--no-docker", "--tag", "v1.2")
    assert run.returncode == 0, run.stderr

    # The repositories exist, with scan on push, at the URIs the script uses.
    repositories = {r["repositoryName"]: r for r in ecr().describe_repositories()["repositories"]}
    assert set(repositories) == {"image-classifier-train", "image-classifier-serve"}
    for name, repository in repositories.items():
        assert repository["imageScanningConfiguration"]["scanOnPush"] is True
        assert repository["repositoryUri"] == f"{REGISTRY}/{name}"

    commit = commit_of(checkout)
    uris = {image: f"{REGISTRY}/image-classifier-{image}" for image in ("train", "serve")}
    builds = [c for c in run.commands() if c[1] == "build"]
    assert len(builds) == 2
    for command, (image, variant) in zip(builds, [("train", "gpu"), ("serve", "cpu")], strict=True):
        assert command[-1] == "."
        assert command[command.index("--file") + 1] == f"docker/{image}.Dockerfile"
        assert command[command.index("--platform") + 1] == "linux/amd64"
        assert command[command.index("--build-arg") + 1] == f"VARIANT={variant}"
        tags = [command[i + 1] for i, word in enumerate(command) if word == "--tag"]
        assert tags == [f"{uris[image]}:v1.2", f"{uris[image]}:{commit}"]
    pushes = [c[2] for c in run.commands() if c[1] == "push"]
    assert pushes == [f"{uris[i]}:{t}" for i in ("train", "serve") for t in ("v1.2", commit)]

    # Login: the token is fetched for real but never printed.
    logins = [line for line in run.stdout.splitlines() if "docker login" in line]
    assert logins == [
        f"aws ecr get-login-password --region {REGION} | "
        f"docker login --username AWS --password-stdin {REGISTRY}"
    ]
    token = ecr().get_authorization_token()["authorizationData"][0]["authorizationToken"]
    password = base64.b64decode(token).decode().partition(":")[2]
    assert password not in run.stdout + run.stderr

    images = json.loads((checkout / "build" / "images.json").read_text())
    assert images == {
        "region": REGION,
        "account": ACCOUNT,
        "tag": "v1.2",
        "train": f"{uris['train']}:v1.2",
        "serve": f"{uris['serve']}:v1.2",
    }
    assert f"train image: {uris['train']}:v1.2" in run.stdout


def test_rerun_with_uncommitted_changes(aws: str, checkout: Path) -> None:
    assert run_script(checkout, "train", "--no-docker").returncode == 0
    (checkout / "docker" / "train.Dockerfile").write_text("# edited\n", encoding="utf-8")
    run = run_script(checkout, "train", "--no-docker")
    assert run.returncode == 0, run.stderr
    # The repository is reused, and the commit tag says the tree was not that commit.
    assert "repository image-classifier-train exists" in run.stderr
    repositories = ecr().describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repositories] == ["image-classifier-train"]
    pushes = [c[2] for c in run.commands() if c[1] == "push"]
    uri = f"{REGISTRY}/image-classifier-train"
    assert pushes == [f"{uri}:latest", f"{uri}:{commit_of(checkout)}-dirty"]


def test_outside_git_only_the_given_tag(aws: str, checkout: Path) -> None:
    shutil.rmtree(checkout / ".git")
    run = run_script(checkout, "serve", "--no-docker", "--tag", "v3")
    assert run.returncode == 0, run.stderr
    assert [c[2] for c in run.commands() if c[1] == "push"] == [
        f"{REGISTRY}/image-classifier-serve:v3"
    ]
    assert "not a git checkout" in run.stderr


def test_variant_flags_and_partial_runs(aws: str, checkout: Path, tmp_path: Path) -> None:
    images_file = tmp_path / "out" / "images.json"
    env = {"IMAGES_FILE": str(images_file)}
    assert run_script(checkout, "train", "--no-docker", env=env).returncode == 0
    first = json.loads(images_file.read_text())
    assert first["serve"] is None

    run = run_script(checkout, "serve", "--gpu", "--no-docker", "--tag", "g1", env=env)
    assert run.returncode == 0, run.stderr
    build = next(c for c in run.commands() if c[1] == "build")
    assert build[build.index("--build-arg") + 1] == "VARIANT=gpu"
    second = json.loads(images_file.read_text())
    # A non-default variant gets its own repository; the train URI of the first run stays.
    assert second["serve"] == f"{REGISTRY}/image-classifier-serve-gpu:g1"
    assert second["train"] == first["train"] == f"{REGISTRY}/image-classifier-train:latest"
    assert second["tag"] == "g1"
    assert not (checkout / "build").exists()

    run = run_script(checkout, "train", "--cpu", "--no-docker", "--images-file", "flag.json")
    assert run.returncode == 0, run.stderr
    assert json.loads((checkout.parent / "flag.json").read_text())["train"] == (
        f"{REGISTRY}/image-classifier-train-cpu:latest"
    )
    names = {r["repositoryName"] for r in ecr().describe_repositories()["repositories"]}
    assert names == {
        "image-classifier-train",
        "image-classifier-serve-gpu",
        "image-classifier-train-cpu",
    }


def test_no_push_creates_nothing(aws: str, checkout: Path) -> None:
    run = run_script(checkout, "all", "--no-push", "--no-docker", "--platform", "linux/arm64")
    assert run.returncode == 0, run.stderr
    assert [c[1] for c in run.commands()] == ["build", "build"]
    assert all("linux/arm64" in c for c in run.commands())
    assert "docker login" not in run.stdout
    assert ecr().describe_repositories()["repositories"] == []


def test_extra_build_args(aws: str, checkout: Path) -> None:
    run = run_script(
        checkout,
        *("serve", "--gpu", "--no-push", "--no-docker"),
        *("--build-arg", "TORCH_CUDA=cu126", "--build-arg=GPU_BASE_IMAGE=nvidia/cuda:12.6.3-base"),
    )
    assert run.returncode == 0, run.stderr
    [build] = run.commands()
    build_args = [build[i + 1] for i, word in enumerate(build) if word == "--build-arg"]
    assert build_args == [
        "VARIANT=gpu",
        "TORCH_CUDA=cu126",
        "GPU_BASE_IMAGE=nvidia/cuda:12.6.3-base",
    ]


def test_region_order(aws: str, checkout: Path) -> None:
    # The flag beats the environment.
    run = run_script(checkout, "train", "--no-docker", "--region", "eu-west-1")
    assert run.returncode == 0, run.stderr
    assert f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/image-classifier-train:latest" in run.stdout
    repositories = boto3.client("ecr", region_name="eu-west-1").describe_repositories()
    assert len(repositories["repositories"]) == 1

    # AWS_DEFAULT_REGION when AWS_REGION is unset, then the CLI configuration.
    no_region: dict[str, str | None] = {"AWS_REGION": None, "AWS_DEFAULT_REGION": "ap-south-1"}
    run = run_script(checkout, "train", "--no-docker", "--no-push", env=no_region)
    assert ".dkr.ecr.ap-south-1." in run.stdout, run.stderr
    (checkout.parent / "aws-config").write_text("[default]\nregion = sa-east-1\n", encoding="utf-8")
    run = run_script(
        checkout, "train", "--no-docker", "--no-push", env={**no_region, "AWS_DEFAULT_REGION": None}
    )
    assert ".dkr.ecr.sa-east-1." in run.stdout, run.stderr

    (checkout.parent / "aws-config").unlink()
    run = run_script(
        checkout, "train", "--no-docker", env={**no_region, "AWS_DEFAULT_REGION": None}
    )
    assert run.returncode == 1
    assert "no AWS region" in run.stderr


def test_no_credentials(aws: str, checkout: Path) -> None:
    no_credentials = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
    }
    run = run_script(checkout, "all", "--no-docker", env=no_credentials)
    assert run.returncode == 1
    assert "are AWS credentials configured?" in run.stderr
    assert "Unable to locate credentials" in run.stderr
    assert not (checkout / "build").exists()


def test_missing_aws_cli(checkout: Path, tmp_path: Path) -> None:
    run = run_script(checkout, "all", "--no-docker", path=tools_path(tmp_path / "bin"))
    assert run.returncode == 1
    assert "AWS CLI ('aws') is not installed" in run.stderr


def test_missing_docker(aws: str, checkout: Path, tmp_path: Path) -> None:
    run = run_script(checkout, "all", path=tools_path(tmp_path / "bin", "aws"))
    assert run.returncode == 1
    assert "'docker' is not installed" in run.stderr
    assert "--no-docker" in run.stderr
    assert ecr().describe_repositories()["repositories"] == []


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on this machine")
def test_docker_daemon_not_running(aws: str, checkout: Path, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"}
    run = run_script(checkout, "all", env=env)
    assert run.returncode == 1
    assert "Docker daemon is not running" in run.stderr


def test_help(checkout: Path) -> None:
    run = run_script(checkout, "--help")
    assert run.returncode == 0
    assert run.stdout.startswith("Usage: ./build_and_push.sh [train|serve|all]")
    for option in ("--tag", "--region", "--cpu", "--gpu", "--platform", "--no-push", "--no-docker"):
        assert option in run.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["--tag"],
        ["--tag", "-bad"],
        ["--tag", "a:b"],
        ["deploy"],
        ["--repo-prefix", "Up"],
        ["--build-arg"],
        ["--registry", "https://ecr.example"],
    ],
)
def test_bad_arguments(checkout: Path, args: list[str]) -> None:
    run = run_script(checkout, *args)
    assert run.returncode == 2
    assert "see --help" in run.stderr


def test_registry_option_pushes_there(aws: str, checkout: Path) -> None:
    run = run_script(checkout, "serve", "--no-docker", "--registry", "127.0.0.1:5999")
    assert run.returncode == 0, run.stderr
    uri = "127.0.0.1:5999/image-classifier-serve"
    assert [c[2] for c in run.commands() if c[1] == "push"] == [
        f"{uri}:latest",
        f"{uri}:{commit_of(checkout)}",
    ]
    assert "--password-stdin 127.0.0.1:5999" in run.stdout
    images = json.loads((checkout / "build" / "images.json").read_text())
    assert images["serve"] == f"{uri}:latest"
    # The repository is still created in the account's ECR.
    assert [r["repositoryName"] for r in ecr().describe_repositories()["repositories"]] == [
        "image-classifier-serve"
    ]


# A stand-in `docker` client: answers as the CLIENT_VERSION given, with or without the buildx
# plugin, and records every command with the DOCKER_BUILDKIT it saw.
FAKE_DOCKER = """#!/usr/bin/env bash
echo "DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-} $*" >>"$FAKE_DOCKER_LOG"
case $1 in
  buildx) [[ $FAKE_BUILDX == yes ]] ;;
  version) echo "$FAKE_CLIENT_VERSION" ;;
  build) if [[ $2 == --help ]]; then echo "$FAKE_BUILD_HELP"; fi ;;
esac
"""
HELP_WITH_PROVENANCE = "      --provenance string   Shorthand for --attest=type=provenance"


def fake_docker_run(
    checkout: Path, tmp_path: Path, version: str, buildx: bool, build_help: str
) -> tuple[Run, list[str]]:
    """build_and_push.sh train --no-push with the stand-in client; (run, its docker commands)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    env = {
        "FAKE_DOCKER_LOG": str(log),
        "FAKE_BUILDX": "yes" if buildx else "no",
        "FAKE_CLIENT_VERSION": version,
        "FAKE_BUILD_HELP": build_help,
        "DOCKER_BUILDKIT": None,
    }
    path = os.pathsep.join([str(bin_dir), VENV_BIN, os.environ.get("PATH", "")])
    run = run_script(checkout, "train", "--no-push", env=env, path=path)
    commands = log.read_text().splitlines() if log.exists() else []
    return run, commands


def test_docker_20_10_without_buildx_builds_with_its_own_buildkit(
    aws: str, checkout: Path, tmp_path: Path
) -> None:
    run, commands = fake_docker_run(checkout, tmp_path, "20.10.24+dfsg1", False, "Usage: ...")
    assert run.returncode == 0, run.stderr
    [build] = [c for c in commands if " build --file" in c]
    assert build.startswith("DOCKER_BUILDKIT=1 ")
    # No such flag there, and no attestation to turn off: a single manifest anyway.
    assert "--provenance" not in build


def test_buildx_that_knows_provenance_gets_it_turned_off(
    aws: str, checkout: Path, tmp_path: Path
) -> None:
    run, commands = fake_docker_run(checkout, tmp_path, "28.2.2", True, HELP_WITH_PROVENANCE)
    assert run.returncode == 0, run.stderr
    [build] = [c for c in commands if " build --file" in c]
    assert "--provenance=false" in build.split()
    assert build.startswith("DOCKER_BUILDKIT= ")  # buildx needs no switch


def test_docker_23_or_later_without_buildx_is_refused(
    aws: str, checkout: Path, tmp_path: Path
) -> None:
    run, commands = fake_docker_run(checkout, tmp_path, "28.2.2", False, HELP_WITH_PROVENANCE)
    assert run.returncode == 1
    assert "install the buildx plugin" in run.stderr
    assert not [c for c in commands if " build --file" in c]
