"""Local hyperparameter tuning: N real training jobs chosen by Optuna's TPE sampler.

The search space and the objective's metric regex are the ones the SageMaker tuner
uses (launch.search_space, trainer.metrics): a local study explores what a cloud
tuning job would. All trials read one shared feature cache, so after the first
trial an extra trial only trains the head.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection

from launch.local.jobdir import attach_feature_cache
from launch.local.processes import run_training
from launch.search_space import (
    OBJECTIVES,
    SEARCH_SPACE,
    Choice,
    FloatRange,
    trial_hyperparameters,
    without_trial_settings,
)
from trainer.metrics import parse_metrics


@dataclass
class TrialResult:
    number: int
    hyperparameters: dict[str, Any]
    objective: float | None
    seconds: float
    state: str  # "ok" or the job's failure reason


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, domain in SEARCH_SPACE.items():
        if isinstance(domain, FloatRange):
            values[name] = trial.suggest_float(name, domain.low, domain.high, log=domain.log)
        elif isinstance(domain, Choice):
            values[name] = trial.suggest_categorical(name, list(domain.values))
    return values


def run_trial(
    data: Path, trial_dir: Path, cache_dir: Path | None, hyperparameters: dict[str, Any]
) -> tuple[int, str]:
    """One real `train` job, reading and filling `cache_dir` as its feature_cache channel
    when given; its log goes to trial_dir/train.log. Returns (exit code, log)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    if cache_dir is not None:
        attach_feature_cache(trial_dir, cache_dir)
    log_path = trial_dir / "train.log"
    with log_path.open("w") as log:
        completed = run_training(
            data,
            trial_dir,
            {k: str(v) for k, v in hyperparameters.items()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return completed.returncode, log_path.read_text()


class Study:
    """An Optuna study whose objective is a training job's last reported metric value."""

    def __init__(self, data: Path, job_dir: Path, objective: str, fixed: dict[str, str], seed: int):
        self.data = data
        self.job_dir = job_dir
        self.objective = OBJECTIVES[objective]
        self.fixed = fixed
        self.cache_dir = job_dir / "feature_cache"
        self.results: list[TrialResult] = []
        self.lock = threading.Lock()
        maximize = self.objective.direction == "Maximize"
        direction = StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE
        sampler = optuna.samplers.TPESampler(seed=seed)
        self.study = optuna.create_study(direction=direction, sampler=sampler)

    def __call__(self, trial: optuna.Trial) -> float:
        hyperparameters = {**self.fixed, **suggest(trial)}
        trial_dir = self.job_dir / "trials" / f"trial-{trial.number:03d}"
        started = time.monotonic()
        exit_code, log = run_trial(self.data, trial_dir, self.cache_dir, hyperparameters)
        values = parse_metrics(log)[self.objective.metric]
        failure = trial_dir / "output" / "failure"
        state = (
            "ok"
            if exit_code == 0 and values
            else (failure.read_text().strip() if failure.exists() else f"exit code {exit_code}")
        )
        # SageMaker's tuner also takes the last value a job reports.
        objective = values[-1] if state == "ok" else None
        with self.lock:
            self.results.append(
                TrialResult(
                    trial.number, hyperparameters, objective, time.monotonic() - started, state
                )
            )
        print(f"trial {trial.number}: {self.objective.metric}={objective} ({state})", flush=True)
        if objective is None:
            raise optuna.TrialPruned(state)
        return objective

    def run(self, trials: int, parallel: int) -> TrialResult | None:
        self.study.optimize(self, n_trials=trials, n_jobs=parallel)
        finished = [r for r in self.results if r.objective is not None]
        if not finished:
            return None
        pick = max if self.objective.direction == "Maximize" else min
        return pick(finished, key=lambda r: r.objective or 0.0)


def leaderboard(results: list[TrialResult], metric: str, descending: bool) -> str:
    finished = sorted(
        (r for r in results if r.objective is not None),
        key=lambda r: r.objective or 0.0,
        reverse=descending,
    )
    failed = [r for r in results if r.objective is None]
    names = list(SEARCH_SPACE)
    header = ["trial", *names, metric, "seconds"]
    rows = [
        [
            str(r.number),
            *(_short(r.hyperparameters[n]) for n in names),
            f"{r.objective:.4f}",
            f"{r.seconds:.1f}",
        ]
        for r in finished
    ]
    rows += [
        [str(r.number), *(_short(r.hyperparameters[n]) for n in names), "failed", r.state[:60]]
        for r in failed
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot_trials(results: list[TrialResult], metric: str, maximize: bool, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    finished = sorted((r for r in results if r.objective is not None), key=lambda r: r.number)
    numbers = [r.number for r in finished]
    values = [r.objective or 0.0 for r in finished]
    best = [max(values[: i + 1]) if maximize else min(values[: i + 1]) for i in range(len(values))]
    figure, (by_trial, by_lr) = plt.subplots(1, 2, figsize=(10, 4))
    by_trial.plot(numbers, values, "o", label="trial")
    by_trial.step(numbers, best, where="post", label="best so far")
    by_trial.set(xlabel="trial", ylabel=metric, title="objective per trial")
    by_trial.legend()
    by_lr.scatter([r.hyperparameters["lr"] for r in finished], values, c=numbers, cmap="viridis")
    by_lr.set(xscale="log", xlabel="lr", ylabel=metric, title="objective against lr")
    for axis in (by_trial, by_lr):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def tune(
    data: Path,
    job_dir: Path,
    trials: int,
    parallel: int,
    objective: str,
    fixed: dict[str, str],
    seed: int = 0,
) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    job_dir.mkdir(parents=True, exist_ok=True)
    study = Study(data, job_dir, objective, trial_hyperparameters(fixed), seed)
    best = study.run(trials, parallel)
    metric = study.objective.metric
    maximize = study.objective.direction == "Maximize"
    print()
    print(leaderboard(study.results, metric, descending=maximize))
    if best is None:
        print("no trial finished; see trials/*/train.log")
        return 1
    summary = {
        "objective": {
            "metric": metric,
            "direction": study.objective.direction,
            "value": best.objective,
        },
        "trial": best.number,
        "hyperparameters": without_trial_settings(best.hyperparameters),
    }
    (job_dir / "best_hyperparameters.json").write_text(json.dumps(summary, indent=2))
    plot_trials(study.results, metric, maximize, job_dir / "trials.png")
    print(f"\nbest: trial {best.number}, {metric}={best.objective:.4f}")
    print(f"wrote {job_dir / 'best_hyperparameters.json'} and {job_dir / 'trials.png'}")
    return 0
