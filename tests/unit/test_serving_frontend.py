"""Building serve's JVM frontend extension (serving/frontend.py): the jar and its name."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from serving import frontend


def test_the_extension_compiles_against_multi_model_servers_jar(tmp_path: Path) -> None:
    jar = frontend.build_jar(tmp_path / "frontend.jar")
    names = zipfile.ZipFile(jar).namelist()
    for java_class in ("ServingFrontend", "RequestGuard", "ModelRegistrations", "Settings"):
        assert f"imgcls/serving/{java_class}.class" in names
    assert frontend.MAIN_CLASS.replace(".", "/") + ".class" in names


def test_the_jar_is_named_after_its_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = tmp_path / "java"
    shutil.copytree(frontend.JAVA_SOURCES, sources, ignore=shutil.ignore_patterns("build"))
    monkeypatch.setattr(frontend, "JAVA_SOURCES", sources)
    before = frontend.frontend_jar().name
    guard = sources / "imgcls" / "serving" / "RequestGuard.java"
    guard.write_text(guard.read_text() + "\n// changed\n")
    assert frontend.frontend_jar().name != before  # a changed source never runs an old jar


def test_a_missing_jar_without_a_jdk_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontend, "BUILD_DIR", tmp_path / "build")
    monkeypatch.setattr(frontend.shutil, "which", lambda name: None)
    with pytest.raises(frontend.FrontendError, match="install a JDK"):
        frontend.ensure_jar()


def test_java_comes_from_java_home_or_the_path(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "java").write_text("#!/bin/sh\n")
    assert frontend.java_executable({"JAVA_HOME": str(tmp_path)}) == tmp_path / "bin" / "java"
    with pytest.raises(frontend.FrontendError, match="JAVA_HOME"):
        frontend.java_executable({"JAVA_HOME": str(tmp_path / "nowhere")})
