"""Folders laid out like SageMaker's /opt/ml, for a training job or a server."""

from __future__ import annotations

import json
from pathlib import Path

from serving.contract import MODEL_SUBDIR
from trainer.contract import FEATURE_CACHE_CHANNEL, IMAGE_CHANNELS, TrainingPaths

LOCAL_HOST = "algo-1"


def replace_link(link: Path, target: Path) -> None:
    """`link` -> `target` (a folder), replacing a previous link or file."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve(), target_is_directory=True)


def host_names(count: int) -> list[str]:
    """SageMaker's names for the hosts of a job: algo-1, algo-2, ..."""
    return [f"algo-{number}" for number in range(1, count + 1)]


def host_dirs(job_dir: Path, hosts: int) -> list[Path]:
    """One /opt/ml per host: JOB itself for one host, JOB/algo-1, JOB/algo-2, ... for more."""
    return [job_dir] if hosts == 1 else [job_dir / name for name in host_names(hosts)]


def layout_job_dir(
    job_dir: Path,
    data_dir: Path,
    hyperparameters: dict[str, str],
    hosts: list[str] | None = None,
    current_host: str = LOCAL_HOST,
) -> None:
    """Write JOB/input/{config,data} as SageMaker does; keep checkpoints so a rerun resumes.

    `hosts`: the job's hosts as resourceconfig.json names them (default: this one alone).
    """
    paths = TrainingPaths(job_dir)
    for folder in (paths.config_dir, paths.input_data_dir, paths.model_dir, paths.output_data_dir):
        folder.mkdir(parents=True, exist_ok=True)
    channels = [name for name in IMAGE_CHANNELS if (data_dir / name).is_dir()]
    for name in channels:
        replace_link(paths.channel(name), data_dir / name)
    input_config = {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
        for name in channels
    }
    resource_config = {
        "current_host": current_host,
        "hosts": hosts or [LOCAL_HOST],
        "network_interface_name": "lo",
    }
    # SageMaker passes every hyperparameter value as a string.
    written = {key: str(value) for key, value in hyperparameters.items()}
    paths.hyperparameters_file.write_text(json.dumps(written, indent=2))
    (paths.config_dir / "inputdataconfig.json").write_text(json.dumps(input_config, indent=2))
    (paths.config_dir / "resourceconfig.json").write_text(json.dumps(resource_config, indent=2))
    for stale in (paths.failure_file, paths.success_file):
        stale.unlink(missing_ok=True)


def attach_feature_cache(job_dir: Path, cache_dir: Path) -> None:
    """Give the job a writable feature_cache channel shared with other jobs (local tuning)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    replace_link(TrainingPaths(job_dir).channel(FEATURE_CACHE_CHANNEL), cache_dir)


def layout_serving_dir(model_dir: Path, base_dir: Path) -> None:
    """BASE/model -> model_dir, as SageMaker unpacks model.tar.gz into /opt/ml/model."""
    base_dir.mkdir(parents=True, exist_ok=True)
    replace_link(base_dir / MODEL_SUBDIR, model_dir)
