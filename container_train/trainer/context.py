"""The job's context: what a run reads at every step, in one value."""

from __future__ import annotations

from dataclasses import dataclass

from model_artifact.preprocessing import Preprocessing
from trainer.cluster import Cluster
from trainer.contract import TrainingPaths
from trainer.data import Channel
from trainer.hyperparameters import Hyperparameters
from trainer.runtime import Runtime


@dataclass(frozen=True)
class JobContext:
    """Where the job reads and writes, its hyperparameters, its place in the cluster, its
    channels (classes from train), the eval preprocessing and where it computes."""

    paths: TrainingPaths
    hp: Hyperparameters
    cluster: Cluster
    channels: dict[str, Channel]
    preprocessing: Preprocessing
    runtime: Runtime

    @property
    def classes(self) -> tuple[str, ...]:
        return self.channels["train"].classes
