"""serve's JVM frontend extension: building it (serving/frontend_build.py), the jar's name,
and finding it at run time (serving/frontend.py)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from serving import frontend, frontend_build


def test_the_extension_compiles_against_multi_model_servers_jar(tmp_path: Path) -> None:
    jar = frontend_build.build_jar(tmp_path / "frontend.jar")
    names = zipfile.ZipFile(jar).namelist()
    java_classes = ("ServingFrontend", "RequestGuard", "ModelRegistrations", "ModelDrain")
    for java_class in (*java_classes, "ModelTraffic", "Routes", "Settings"):
        assert f"imgcls/serving/{java_class}.class" in names
    assert frontend.MAIN_CLASS.replace(".", "/") + ".class" in names
    assert "com/amazonaws/ml/mms/util/codec/ModelResponseDecoder.class" in names


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


def test_a_missing_jar_names_the_build_command_and_is_not_built_at_run_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontend, "BUILD_DIR", tmp_path / "build")
    with pytest.raises(
        frontend.FrontendError, match=re.escape("python -m serving.frontend_build jar")
    ):
        frontend.installed_jar()
    assert not (tmp_path / "build").exists()


def test_a_build_without_a_jdk_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontend_build.shutil, "which", lambda name: None)
    with pytest.raises(frontend.FrontendError, match="install a JDK"):
        frontend_build.build_jar(tmp_path / "frontend.jar")


def test_the_build_refuses_another_multi_model_server_jar_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoder replaces a class of multi-model-server 1.1.11's jar: another jar (a later
    release, a rebuilt one) must be checked by someone before the extension is built on it."""
    other = tmp_path / "mms" / "frontend" / "model-server.jar"
    other.parent.mkdir(parents=True)
    shutil.copyfile(frontend.mms_jars()[0], other)
    with other.open("ab") as jar:
        jar.write(b"\0")  # one byte more: another jar
    monkeypatch.setattr(frontend, "mms_jars", lambda: [other])
    with pytest.raises(
        frontend.FrontendError, match=re.escape("multi-model-server 1.1.11")
    ) as refused:
        frontend_build.build_jar(tmp_path / "frontend.jar")
    assert "ModelResponseDecoder" in str(refused.value)
    assert not (tmp_path / "frontend.jar").exists()
    assert frontend_build.main(["archive"]) == 1  # the archive is of the same jars


def test_the_installed_multi_model_server_jar_is_the_one_checked_against() -> None:
    frontend_build.check_mms_jars(frontend.mms_jars())  # raises if not


def test_java_comes_from_java_home_or_the_path(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "java").write_text("#!/bin/sh\n")
    assert frontend.java_executable({"JAVA_HOME": str(tmp_path)}) == tmp_path / "bin" / "java"
    with pytest.raises(frontend.FrontendError, match="JAVA_HOME"):
        frontend.java_executable({"JAVA_HOME": str(tmp_path / "nowhere")})


def imports_of(path: str | None) -> set[str]:
    """Every module a source file imports, at its top or inside a function."""
    assert path is not None
    imported = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    return imported


def test_the_frontend_never_imports_the_server_nor_its_build() -> None:
    """server imports frontend, so importing server here would be a cycle, even inside a
    function: test_packaging's cycle test skips those as lazy and can't see it. The build
    imports the frontend (for its locations and command line): the run time never builds."""
    imported = imports_of(frontend.__file__)
    assert "serving.server" not in imported
    assert "serving.frontend_build" not in imported


# Feeds one worker answer to a decoder in two pieces, split at every byte; prints how many
# splits decoded to the whole answer and how many failed.
SPLIT_FRAMES = """
import com.amazonaws.ml.mms.util.codec.ModelResponseDecoder;
import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.util.messages.Predictions;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

public final class SplitFrames {
    public static void main(String[] args) throws Exception {
        byte[] frame = Files.readAllBytes(Paths.get(args[0]));
        String expected = args[1];
        int decoded = 0;
        int failed = 0;
        for (int split = 1; split < frame.length; split++) {
            EmbeddedChannel channel = new EmbeddedChannel(new ModelResponseDecoder(6553500));
            try {
                channel.writeInbound(Unpooled.wrappedBuffer(frame, 0, split));
                channel.writeInbound(Unpooled.wrappedBuffer(frame, split, frame.length - split));
                ModelWorkerResponse response = channel.readInbound();
                StringBuilder seen = new StringBuilder();
                for (Predictions p : response.getPredictions()) {
                    seen.append(new String(p.getResp(), StandardCharsets.UTF_8)).append('|')
                        .append(p.getContentType()).append('|')
                        .append(p.getHeaders().get("x-serving-batch-size")).append(';');
                }
                if (seen.toString().equals(expected)) { decoded++; } else { failed++; }
            } catch (Exception e) {
                failed++;
            }
        }
        System.out.println(decoded + " " + failed);
    }
}
"""


def decode_split_frames(tmp_path: Path, classpath: list[Path]) -> tuple[int, int]:
    """A worker's answer to a batch of 4, as multi-model-server's Python side frames it,
    decoded after arriving in two pieces, for every split."""
    from mms.context import Context, RequestProcessor  # noqa: PLC0415
    from mms.protocol.otf_message_handler import create_predict_response  # noqa: PLC0415

    context = Context("model", str(tmp_path), None, 4, None, "1.1.11")
    context.request_processor = [RequestProcessor({}) for _ in range(4)]
    bodies = [f'{{"predictions": [{{"label": "request {i}"}}]}}'.encode() for i in range(4)]
    for index in range(4):
        context.set_response_content_type(index, "application/json")
        context.set_response_header(index, "x-serving-batch-size", "4")
    frame = create_predict_response(bodies, {i: f"id-{i}" for i in range(4)}, "ok", 200, context)
    (tmp_path / "frame.bin").write_bytes(bytes(frame))
    expected = "".join(f"{body.decode()}|application/json|4;" for body in bodies)
    source = tmp_path / "SplitFrames.java"
    source.write_text(SPLIT_FRAMES)
    path = os.pathsep.join(map(str, classpath))
    subprocess.run(["javac", "-nowarn", "-cp", path, "-d", str(tmp_path), str(source)], check=True)
    result = subprocess.run(
        [
            "java",
            "-cp",
            os.pathsep.join([str(tmp_path), path]),
            "SplitFrames",
            str(tmp_path / "frame.bin"),
            expected,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    decoded, failed = result.stdout.strip().splitlines()[-1].split()
    return int(decoded), int(failed)


def test_a_batch_answer_that_arrives_in_pieces_is_decoded_whole(tmp_path: Path) -> None:
    jar = frontend_build.build_jar(tmp_path / "frontend.jar")
    decoded, failed = decode_split_frames(tmp_path, frontend.classpath(jar))
    assert (decoded, failed) == (decoded + failed, 0)
    # multi-model-server's own decoder (without the extension first) fails some splits.
    assert decode_split_frames(tmp_path, frontend.mms_jars())[1] > 0
