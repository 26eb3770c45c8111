"""The launch CLI sends the same requests to SageMaker on SDK 2.x and on SDK 3.x.

`support.sdk_scenario` runs every command once in each generation's environment (the
project's .venv, SDK 2.x; .venv-sdk3, SDK 3.x), each against its own emulator recording
every request; the two recordings must be equal, field by field, apart from the names
each run generates (`support.sdk_recording` says what it normalises, and why).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from launch.cloud import cli, sdk, sdk2, sdk3
from support.aws_emulator import Emulator, emulator_env, recording_emulator
from support.sdk_recording import count_fields, sent

ROOT = Path(__file__).resolve().parents[2]
# Each generation's interpreter: the Makefile's environments unless the variable says.
PYTHONS = {
    "2.x": Path(os.environ.get("SDK2_PYTHON", ROOT / ".venv" / "bin" / "python")),
    "3.x": Path(os.environ.get("SDK3_PYTHON", ROOT / ".venv-sdk3" / "bin" / "python")),
}
# What the scenario must have sent, at the least: an empty or cut-short run fails here.
EXPECTED_CALLS = {
    "SageMaker.CreateHyperParameterTuningJob": 2,
    "SageMaker.CreateTrainingJob": 2,
    "SageMaker.CreateModel": 5,
    "SageMaker.CreateEndpointConfig": 4,
    "SageMaker.CreateEndpoint": 4,
    "SageMaker.CreateTransformJob": 1,
    "AnyScaleFrontendService.RegisterScalableTarget": 2,
    "AnyScaleFrontendService.PutScalingPolicy": 3,
    "GraniteServiceVersion20100801.PutMetricAlarm": 1,
    "SageMaker.DeleteEndpoint": 4,
}


def scenario(python: Path, endpoint: str) -> subprocess.Popen[str]:
    """Start the scenario in one environment, against one emulator."""
    tests = str(ROOT / "tests")
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [str(python), "-m", "support.sdk_scenario"],
        env={**os.environ, **emulator_env(endpoint), "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def finished(process: subprocess.Popen[str]) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-4000:]
    return out


def calls(requests: list[dict[str, object]]) -> Counter[str]:
    return Counter(str(request["call"]) for request in requests)


def test_sdk_2_and_3_send_the_same_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, python in PYTHONS.items():
        if not python.exists():
            pytest.skip(f"no SDK {name} environment at {python} (make builds both)")
    recordings = {name: tmp_path / f"sdk{name[0]}.jsonl" for name in PYTHONS}
    # Both at once, each with its own emulator: the two generations share nothing.
    with contextlib.ExitStack() as stack:
        running = {}
        for name, python in PYTHONS.items():
            monkeypatch.setenv("MOTO_RECORDER_FILEPATH", str(recordings[name]))  # read at start
            emulator = stack.enter_context(recording_emulator(recordings[name]))
            running[name] = scenario(python, emulator.endpoint)
        outputs = {name: finished(process) for name, process in running.items()}
    for name, out in outputs.items():
        assert f"using SageMaker Python SDK {name} " in out

    sdk2, sdk3 = (sent(recordings[name]) for name in PYTHONS)
    found = calls(sdk2)
    assert {call: found[call] for call in EXPECTED_CALLS} == EXPECTED_CALLS
    if sdk2 != sdk3:
        diff = difflib.unified_diff(
            json.dumps(sdk2, indent=1, sort_keys=True).splitlines(),
            json.dumps(sdk3, indent=1, sort_keys=True).splitlines(),
            "SDK 2.x",
            "SDK 3.x",
            lineterm="",
        )
        pytest.fail("the generations sent different requests:\n" + "\n".join(diff))
    print(f"{len(sdk2)} requests, {count_fields(sdk2)} fields: the same from SDK 2.x and 3.x")


# ----------------------------------------------------------------------- choosing the SDK


@pytest.mark.parametrize(
    ("sagemaker", "core", "chosen"),
    [
        ("2.257.7", "1.0.78", "2.x"),  # SDK 2.x (it installs sagemaker-core 1.x)
        ("3.27.0", "2.27.0", "3.x"),  # the meta-package sagemaker 3.x
        (None, "2.27.0", "3.x"),  # sagemaker-core alone: all the launch tools need of 3.x
    ],
)
def test_the_installed_sdk_generation_is_chosen(
    sagemaker: str | None, core: str | None, chosen: str
) -> None:
    generation = sdk.choose(sagemaker, core)
    assert generation.name == chosen
    assert generation.calls is (sdk2 if chosen == "2.x" else sdk3)


@pytest.mark.parametrize(
    ("sagemaker", "core", "found"),
    [
        ("1.72.1", None, "sagemaker 1.72.1"),
        (None, "1.0.78", "sagemaker-core 1.0.78"),
        (None, None, "none installed"),
    ],
)
def test_an_unsupported_sdk_is_refused_in_one_line(
    sagemaker: str | None,
    core: str | None,
    found: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    versions = {sdk.SDK2_DISTRIBUTION: sagemaker, sdk.SDK3_DISTRIBUTION: core}
    monkeypatch.setattr(sdk, "installed_version", versions.get)
    sdk.generation.cache_clear()
    try:
        code = cli.main(["invoke", "--endpoint", "any", str(tmp_path)])
    finally:
        sdk.generation.cache_clear()
    _, err = capsys.readouterr()
    assert code == 1
    assert not emulator.recording.exists()  # refused before any request
    assert err == (
        f"error: unsupported SageMaker Python SDK ({found}): install SDK 3.x "
        "(pip install -r requirements-launch-sdk3.txt) or 2.x "
        "(pip install -r requirements-launch-sdk2.txt)\n"
    )
