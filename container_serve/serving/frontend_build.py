"""Building `serve`'s JVM frontend (build time; serving/frontend.py starts it at run time).

- The jar: `serving/java/` compiled against multi-model-server's jar, named after its sources.
  Only against the jar it was written for: its ModelResponseDecoder takes the place of that
  jar's class of the same name and reads the frame its Python side writes, so another
  multi-model-server release is refused (by the jar's SHA-256) until someone checks both.
- The class-data archive: the classes one start of the frontend loads, written by the JVM as
  a run with a stub model stops; only that JVM build and those jars use it (its name is a
  digest of them).

`python -m serving.frontend_build build` does both (a JDK's `javac`, then `java`) and
removes what earlier builds left; `make venv` runs it. The serving image runs `jar` in its
build stage (with a JDK) and `archive` in the stage it ships (with the JRE that will run it).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from serving import content_types, contract, frontend

# multi-model-server 1.1.11's model-server.jar (its wheel's RECORD lists the same digest).
MMS_JAR_SHA256 = {
    "model-server.jar": "9363acf1b1b625019ebe54d6c650fdea350333d6d1fc6b5f9ee208275a3ea4ed",
}
MMS_VERSION = "1.1.11"


# ------------------------------------------------------ multi-model-server's jar, checked


def check_mms_jars(jars: Sequence[Path]) -> None:
    """Refuse jars other than those serving/java was written against, saying why."""
    found = {jar.name: sha256(jar) for jar in jars}
    if found == MMS_JAR_SHA256:
        return
    described = ", ".join(f"{name} sha256 {digest[:12]}" for name, digest in found.items())
    raise frontend.FrontendError(
        f"multi-model-server's jars ({described or 'none'}) are not those of "
        f"multi-model-server {MMS_VERSION} that serving/java was written against: its "
        "ModelResponseDecoder replaces that jar's class of the same name and reads the frame "
        "of that release's Python side (mms/protocol/otf_message_handler.py). Install "
        f"multi-model-server=={MMS_VERSION}, or check the decoder against the new release and "
        "update MMS_JAR_SHA256 in serving/frontend_build.py"
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ the jar


def build_jar(target: Path | None = None) -> Path:
    """Compile serving/java against multi-model-server's jar; needs a JDK's javac."""
    target = target or frontend.frontend_jar()
    mms_jars = frontend.mms_jars()
    check_mms_jars(mms_jars)
    javac = shutil.which("javac")
    if javac is None:
        raise frontend.FrontendError(
            f"there is no javac to build {target.name}: install a JDK "
            "(e.g. openjdk-17-jdk-headless) and run `python -m serving.frontend_build jar`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="frontend-classes-") as classes:
        compile_command = [
            javac, "--release", frontend.JAVA_RELEASE, "-nowarn", "-d", classes,
            "-cp", os.pathsep.join(map(str, mms_jars)),
            *map(str, frontend.java_sources()),
        ]  # fmt: skip
        result = subprocess.run(compile_command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise frontend.FrontendError(f"javac failed:\n{result.stderr.strip()}")
        partial = target.with_suffix(f".{os.getpid()}.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            for path in sorted(Path(classes).rglob("*.class")):
                jar.write(path, path.relative_to(classes).as_posix())
        partial.replace(target)  # atomic: a concurrent `serve` sees no half-written jar
    return target


# ------------------------------------------------------------------ the class-data archive


# By module name: the stub model's workers import this module to run it.
ARCHIVE_RUN_HANDLER = "serving.frontend_build:archive_run_handler"


def archive_run_handler(data: list[Any] | None, context: Any) -> list[bytes] | None:
    """The handler of the archive-writing run: loads nothing, answers every request."""
    return None if data is None else [b"{}" for _ in data]


@contextmanager
def _archive_run(java: Path, jar: Path, archive: Path) -> Iterator[int]:
    """The frontend serving one stub model, writing `archive` when it exits; yields its port."""
    port = frontend.free_port()
    with tempfile.TemporaryDirectory(prefix="frontend-archive-") as folder:
        runtime = Path(folder)
        (runtime / "store" / "model").mkdir(parents=True)
        settings = contract.read_settings(
            {contract.BIND_TO_PORT_ENV: str(port), contract.MODEL_SERVER_WORKERS_ENV: "1"}
        )
        config = runtime / "mms.properties"
        config.write_text(
            frontend.mms_properties(settings, runtime, ARCHIVE_RUN_HANDLER, host="127.0.0.1")
        )
        launch = frontend.Launch(java, jar, runtime, config, runtime / "store", "model=model")
        flags = [f"-XX:ArchiveClassesAtExit={archive}", *frontend.START_UP_FLAGS]
        command = frontend.jvm_command(settings, launch, flags)
        process = subprocess.Popen(
            command,
            cwd=runtime,
            env=frontend.model_server_env(settings, runtime),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield port
        finally:
            os.killpg(process.pid, signal.SIGTERM)  # the JVM writes the archive as it exits
            process.wait(timeout=120)
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the stub's Python workers


def _exercise(port: int) -> None:
    """Load the classes of start-up, a batch, and every answer of the guard."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            request = urllib.request.Request(f"{url}/invocations", b"x", method="POST")
            request.add_header("Content-Type", content_types.JPEG)
            with urllib.request.urlopen(request, timeout=10):
                break
        except OSError:  # not up yet (an HTTP error is an OSError too)
            if time.monotonic() > deadline:
                raise frontend.FrontendError(
                    "the archive run did not answer within 120 s"
                ) from None
            time.sleep(0.2)
    for path, body, kind in (
        ("/ping", None, None),
        ("/execution-parameters", None, None),
        ("/invocations", b"a=1", "application/x-www-form-urlencoded"),
        ("/models", None, None),
    ):
        request = urllib.request.Request(f"{url}{path}", body)
        if kind:
            request.add_header("Content-Type", kind)
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as error:
            error.read()


def write_archive(java: Path, jar: Path) -> Path:
    """Run the frontend once with a stub model and keep the classes it loaded."""
    archive = frontend.archive_path(java, frontend.classpath(jar))
    partial = archive.with_suffix(f".{os.getpid()}.partial")
    with _archive_run(java, jar, partial) as port:
        _exercise(port)
    if not partial.is_file():
        raise frontend.FrontendError(f"the JVM wrote no class archive ({java} may not support it)")
    partial.replace(archive)
    return archive


def remove_all_but(*keep: Path) -> None:
    """Earlier builds' jars and archives: never used again once their sources changed."""
    for path in frontend.BUILD_DIR.iterdir():
        if path not in keep:
            path.unlink()


# ------------------------------------------------------------------------------ the CLI


COMMANDS = {
    "jar": "compile the frontend extension (needs a JDK's javac)",
    "archive": "write the class-data archive for this JVM and the jar (needs java)",
    "build": "both, and remove what earlier builds left",
}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m serving.frontend_build jar|archive|build` (the serving image compiles the jar in a
    build stage with a JDK, and writes the archive in the stage it ships, with its JRE)."""
    parser = argparse.ArgumentParser(description="Build serve's JVM frontend extension.")
    parser.add_argument(
        "command", choices=COMMANDS, help="; ".join(f"{k}: {v}" for k, v in COMMANDS.items())
    )
    command = parser.parse_args(argv).command
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_mms_jars(frontend.mms_jars())  # the archive, too, is of these jars' classes
        jar = build_jar() if command in ("jar", "build") else frontend.frontend_jar()
        print(f"frontend jar: {jar}")
        if command in ("archive", "build"):
            if not jar.is_file():
                raise frontend.FrontendError(
                    f"{jar} is missing: run `python -m serving.frontend_build jar` first"
                )
            archive = write_archive(frontend.java_executable(), jar)
            print(f"class archive: {archive}")
            if command == "build":
                remove_all_but(jar, archive)
    except frontend.FrontendError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
