"""`profile_steps` traces the training steps whatever trains: the head or backbone stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.local.jobdir import layout_job_dir
from launch.synthetic_images import make_dataset
from support.jobs import TINY, run_in_process
from trainer.contract import TrainingPaths
from trainer.profiling import TRACE_FILE

pytestmark = pytest.mark.contract


def test_profile_steps_trace_the_training_of_backbone_stages(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=4)
    job = tmp_path / "job"
    settings = {"train_layers": "layer4", "epochs": "1", "profile_steps": "2", "batch_size": "4"}
    layout_job_dir(job, data, {**TINY, **settings})
    run_in_process(job)
    trace = TrainingPaths(job).output_data_dir / "profile" / TRACE_FILE
    events = json.loads(trace.read_text())["traceEvents"]
    # The trained stages ran inside the trace: their convolutions' backward is in it.
    assert any("ConvolutionBackward" in str(event.get("name")) for event in events)
