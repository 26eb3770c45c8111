"""The launch CLI's parser, its one-line errors, and `upload` against the AWS emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from launch.cloud import cli as cloud
from launch.cloud.data import SplitFractions, plan_split
from launch.synthetic_images import make_dataset, make_image_folder
from support.aws_emulator import Emulator

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMANDS = (
    "upload",
    "tune",
    "train",
    "report",
    "deploy",
    "invoke",
    "cleanup",
    "transform",
    "transform-report",
)
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "launch-tests"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cloud.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def names(split: dict[str, dict[str, list[Path]]]) -> dict[str, dict[str, set[str]]]:
    return {
        channel: {label: {path.name for path in files} for label, files in classes.items()}
        for channel, classes in split.items()
    }


# ------------------------------------------------------------------------------------ parser


def test_every_subcommand_has_help() -> None:
    script = str(REPO_ROOT / "scripts" / "cloud.py")
    top = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, check=True
    )
    for command in COMMANDS:
        assert command in top.stdout
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exited:
            cloud.build_parser().parse_args([command, "--help"])
        assert exited.value.code == 0


def test_parser_defaults() -> None:
    parser = cloud.build_parser()
    train = parser.parse_args(["train"])
    assert train.instance_type == "ml.g4dn.xlarge"
    assert train.wait is True
    assert train.local is None
    assert parser.parse_args(["train", "--local"]).local == "local"
    assert parser.parse_args(["train", "--local", "local_gpu", "--no-wait"]).wait is False
    assert parser.parse_args(["deploy", "--job", "j"]).instance_type == "ml.t2.medium"
    tune = parser.parse_args(["tune"])
    assert (tune.objective, tune.early_stopping) == ("valid_accuracy", True)
    assert parser.parse_args(["tune", "--objective", "valid_loss"]).objective == "valid_loss"


# ------------------------------------------------------------------------- one-line errors


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials or region from anywhere: environment, files, instance metadata."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "SAGEMAKER_ROLE",
        "SAGEMAKER_BUCKET",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_missing_region_is_one_line(
    no_aws_config: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    make_dataset(tmp_path, per_class=1)
    code, _, err = run_cli(capsys, "upload", "--data", str(tmp_path))
    assert code == 1
    assert err == "error: no AWS region: pass --region or set AWS_DEFAULT_REGION\n"


def test_missing_credentials_is_one_line(
    no_aws_config: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "cleanup", "--region", "eu-west-1", "--endpoint", "e")
    assert code == 1
    assert err.startswith("error: no AWS credentials: run `aws configure`")
    assert err.count("\n") == 1


def test_missing_role_and_image_are_one_line(
    no_aws_config: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "train", "--train-image", "img:1")
    assert (code, err) == (1, err.splitlines()[0] + "\n")
    assert "no IAM role: pass --role ARN or set SAGEMAKER_ROLE" in err

    missing = tmp_path / "images.json"
    code, _, err = run_cli(capsys, "tune", "--role", ROLE, "--images-file", str(missing))
    assert code == 1
    assert err == (
        f"error: no train image URI in {missing}: run ./build_and_push.sh or pass --train-image\n"
    )
    missing.write_text(json.dumps({"train": "img:1"}))  # no serving image yet
    code, _, err = run_cli(
        capsys, "deploy", "--job", "j", "--role", ROLE, "--images-file", str(missing)
    )
    assert code == 1
    assert "no serve image URI" in err
    assert "pass --serve-image" in err


def test_missing_bucket_is_one_line(aws: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys, "train", "--role", ROLE, "--train-image", "img:1", "--bucket", "nowhere-bucket"
    )
    assert code == 1
    assert err.startswith("error: bucket nowhere-bucket not found or not accessible")
    assert "pass --bucket NAME or set SAGEMAKER_BUCKET" in err


def test_train_without_uploaded_data_says_to_upload(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    code, _, err = run_cli(
        capsys, "train", "--role", ROLE, "--train-image", "img:1", "--bucket", BUCKET
    )
    assert code == 1
    assert err == (
        f"error: no train or valid channel under s3://{BUCKET}/image-classifier/data/: "
        "run `cloud.py upload --data DIR` first or pass --data-uri\n"
    )


# ------------------------------------------------------------- checked before any AWS call


def aws_requests(emulator: Emulator) -> list[str]:
    """The URLs of every request the emulator received from the CLI."""
    return [entry["url"] for entry in emulator.recorded() if "/moto-api/" not in entry["url"]]


@pytest.fixture
def configured(emulator: Emulator) -> Emulator:
    """Everything a job needs is there (bucket, channels, role), so only the check refuses."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for channel in ("train", "valid"):
        s3.put_object(Bucket=BUCKET, Key=f"image-classifier/data/{channel}/cat/0.jpg")
    emulator.post("/moto-api/recorder/reset-recording")
    return emulator


JOB_FLAGS = ("--role", ROLE, "--train-image", "img:1", "--bucket", BUCKET, "--no-wait")


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (
            ["train", "--hp", "epochs=ten"],
            "hyperparameter epochs='ten' is invalid: expected an integer in [1, 10000]",
        ),
        (
            ["tune", "--hp", "lr=0"],
            "hyperparameter lr='0' is out of range: expected a number in (0, 10]",
        ),
        (["train", "--hp", "epochs"], "--hp takes key=value, got 'epochs'"),
    ],
)
def test_a_value_the_job_would_refuse_is_refused_before_any_aws_call(
    configured: Emulator, capsys: pytest.CaptureFixture[str], argv: list[str], reason: str
) -> None:
    code, out, err = run_cli(capsys, *argv, *JOB_FLAGS)
    assert (code, out, err) == (2, "", f"error: {reason}\n")
    assert aws_requests(configured) == []


def test_a_hyperparameters_file_is_checked_with_the_flags_over_it(
    configured: Emulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tuned = tmp_path / "best.json"
    tuned.write_text(json.dumps({"hyperparameters": {"lr": "0.01", "batch_szie": "64"}}))
    code, _, err = run_cli(capsys, "train", *JOB_FLAGS, "--hyperparameters", str(tuned))
    assert code == 2
    assert err.startswith("error: unknown hyperparameter 'batch_szie'; known: amp, ")
    tuned.write_text(json.dumps({"lr": "fast"}))  # a flat object, as a user writes one
    code, _, err = run_cli(
        capsys, "train", *JOB_FLAGS, "--hyperparameters", str(tuned), "--hp", "epochs=0"
    )
    assert (code, err.split(":")[1]) == (2, " hyperparameter lr='fast' is invalid")
    assert aws_requests(configured) == []
    # A bad file value that --hp replaces is no longer the job's: the job starts.
    code, _, err = run_cli(
        capsys, "train", *JOB_FLAGS, "--hyperparameters", str(tuned), "--hp", "lr=0.5"
    )
    assert code == 0, err
    assert len(configured.requests("CreateTrainingJob")) == 1  # the recorder sees the CLI
    (job,) = boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    described = boto3.client("sagemaker").describe_training_job(
        TrainingJobName=job["TrainingJobName"]
    )
    assert described["HyperParameters"] == {"lr": "0.5"}


# ------------------------------------------------------------------------------------- split


def test_image_folders_are_kept_as_they_are(tmp_path: Path) -> None:
    make_dataset(tmp_path, per_class=3)
    split = names(plan_split(tmp_path, SplitFractions()))
    assert split["valid"] == {"cat": {"cat.0.jpg", "cat.1.jpg", "cat.2.jpg"}} | {
        "dog": {"dog.0.jpg", "dog.1.jpg", "dog.2.jpg"}
    }
    assert set(split) == {"train", "valid", "test"}


def test_kaggle_folders_split_train_into_train_and_valid(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train", 20, classes=("cats", "dogs"))
    make_image_folder(tmp_path / "test", 4, classes=("cats", "dogs"))
    first = names(plan_split(tmp_path, SplitFractions(valid=0.25, seed=7)))
    assert {label: len(files) for label, files in first["valid"].items()} == {"cats": 5, "dogs": 5}
    assert {label: len(files) for label, files in first["train"].items()} == {
        "cats": 15,
        "dogs": 15,
    }
    assert {label: len(files) for label, files in first["test"].items()} == {"cats": 4, "dogs": 4}
    assert not first["train"]["cats"] & first["valid"]["cats"]
    assert names(plan_split(tmp_path, SplitFractions(valid=0.25, seed=7))) == first
    assert names(plan_split(tmp_path, SplitFractions(valid=0.25, seed=8))) != first


def test_flat_kaggle_files_split_into_three_stratified_channels(tmp_path: Path) -> None:
    flat = tmp_path / "train"
    make_image_folder(tmp_path / "classes", 10)
    flat.mkdir()
    for path in sorted((tmp_path / "classes").rglob("*.jpg")):
        path.rename(flat / path.name)  # cat.0.jpg ... dog.9.jpg side by side
    split = plan_split(tmp_path, SplitFractions(valid=0.2, test=0.2))
    counts = {ch: {label: len(f) for label, f in c.items()} for ch, c in split.items()}
    assert counts == {
        "train": {"cat": 6, "dog": 6},
        "valid": {"cat": 2, "dog": 2},
        "test": {"cat": 2, "dog": 2},
    }
    every = [
        path.name for classes in split.values() for files in classes.values() for path in files
    ]
    assert len(every) == len(set(every)) == 20


def test_a_folder_without_labelled_images_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    code, _, err = run_cli(capsys, "upload", "--data", str(tmp_path), "--bucket", BUCKET)
    assert code == 1
    assert err.startswith(f"error: no labelled images in {tmp_path}: expected train/ and valid/")


# ------------------------------------------------------------------------------------ upload


def bucket_objects(bucket: str) -> dict[str, int]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return {item["Key"]: item["Size"] for item in listed.get("Contents", [])}


def test_upload_puts_channels_on_s3_and_resumes(
    aws: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    make_dataset(tmp_path / "data", per_class=3)
    code, out, _ = run_cli(capsys, "upload", "--data", str(tmp_path / "data"))
    assert code == 0
    bucket = "sagemaker-us-east-1-123456789012"  # the SDK's default bucket name, via STS
    uploaded = bucket_objects(bucket)
    assert len(uploaded) == 18
    local = tmp_path / "data" / "valid" / "dog" / "dog.2.jpg"
    assert uploaded["image-classifier/data/valid/dog/dog.2.jpg"] == local.stat().st_size
    assert f"train s3://{bucket}/image-classifier/data/train/" in out
    assert "(3 cat, 3 dog; 6 uploaded, 0 present)" in out

    # A rerun sends only what is missing or has another size.
    boto3.client("s3").delete_object(Bucket=bucket, Key="image-classifier/data/test/cat/cat.0.jpg")
    local.write_bytes(local.read_bytes() + b"\0")
    code, out, _ = run_cli(capsys, "upload", "--data", str(tmp_path / "data"))
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["train"].endswith("0 uploaded, 6 present)")
    assert lines["valid"].endswith("1 uploaded, 5 present)")
    assert lines["test"].endswith("1 uploaded, 5 present)")
    assert bucket_objects(bucket)["image-classifier/data/valid/dog/dog.2.jpg"] == (
        local.stat().st_size
    )


def test_upload_to_a_named_bucket_and_prefix(
    aws: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    make_image_folder(tmp_path / "train", 10, classes=("cats", "dogs"))
    code, _, _ = run_cli(
        capsys,
        "upload",
        "--data",
        str(tmp_path),
        "--bucket",
        BUCKET,
        "--prefix",
        "runs/a",
        "--workers",
        "2",
    )
    assert code == 0
    keys = bucket_objects(BUCKET)
    channels = {key.split("/")[3] for key in keys}
    assert channels == {"train", "valid", "test"}
    assert all(key.startswith("runs/a/data/") for key in keys)
    assert len(keys) == 20


def test_local_mode_without_docker_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker on it
    data = make_dataset(tmp_path / "data", per_class=1)
    code, _, err = run_cli(
        capsys,
        "train",
        "--local",
        "--role",
        ROLE,
        "--train-image",
        "img:1",
        "--data-uri",
        f"file://{data}",
    )
    assert (code, err) == (
        1,
        "error: --local needs Docker with docker compose (SageMaker local mode)\n",
    )
