"""multi-model-server's Java frontend as `serve` runs it.

`serve` starts the JVM itself (not through multi-model-server's Python launcher), with its
config file and environment (mms_properties, model_server_env) and:

- this package's frontend extension, compiled from `serving/java/` into a jar: its main
  class is multi-model-server's server plus server-side batching for the served model, a
  guard for odd requests (413 and 415 answers with a JSON reason, GET
  /execution-parameters), on a multi-model endpoint a limit on the models loaded (507),
  the repair of failed registrations and the drain of a model's requests before it is
  unloaded, and a worker-response decoder that takes split answers to a batch; the Java
  sources say why each is needed;
- start-up flags that halve the JVM's boot (C1 compiler only, serial GC) and, where one
  was written for this JVM and these jars, an application class-data archive.

This module is the run time only: it finds the jar and the archive and never builds them;
`serving.frontend_build` does (`python -m serving.frontend_build jar|archive|build`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import random
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import content_types, contract
from serving.errors import error_body

logger = logging.getLogger("serve")

JAVA_SOURCES = Path(__file__).with_name("java")
BUILD_DIR = JAVA_SOURCES / "build"
MAIN_CLASS = "imgcls.serving.ServingFrontend"
JAVA_RELEASE = "11"  # the oldest JRE the jar runs on; the images ship 17
LOG_CONFIG = Path(__file__).with_name("log4j2.xml")
# The JVM's own start-up cost is most of the frontend's: C1 alone compiles the start-up code
# sooner (the frontend does little per request next to a forward pass), and the serial GC
# starts no GC threads. With the class archive these bring the first /ping from about 2 s to 1 s.
START_UP_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData")
# Batch Transform: one image file is one record, never several in one request.
BATCH_STRATEGY = "SINGLE_RECORD"
HANDLER = "serving.entry:handle"  # what the workers run (multi-model-server's handler)
PRELOAD_SOCKET = "preload.sock"  # in the runtime dir: where serving.preload listens
RETRY_AFTER_S = 1  # the Retry-After of a 503 to a model being loaded or unloaded


class FrontendError(Exception):
    """The frontend can't be started or built; the message says what to do."""


# ------------------------------------------------------------------------------- locations


def mms_home() -> Path:
    """The folder that holds multi-model-server's `mms` package (its `model_server_home`)."""
    spec = importlib.util.find_spec("mms")  # located, not imported
    if spec is None or spec.origin is None:
        raise FrontendError("multi-model-server is not installed")
    return Path(spec.origin).resolve().parent.parent


def mms_jars() -> list[Path]:
    return sorted((mms_home() / "mms" / "frontend").glob("*.jar"))


def java_executable(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    java_home = env.get(contract.JAVA_HOME_ENV)
    found = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not found or not Path(found).is_file():
        raise FrontendError(
            "multi-model-server needs a Java runtime: put java on PATH or set JAVA_HOME"
        )
    return Path(found)


def java_sources() -> list[Path]:
    return sorted(JAVA_SOURCES.rglob("*.java"))


def source_digest() -> str:
    """Names the jar after its sources: a changed source never runs an old jar."""
    digest = hashlib.sha256(JAVA_RELEASE.encode())
    for source in java_sources():
        digest.update(source.relative_to(JAVA_SOURCES).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def frontend_jar() -> Path:
    return BUILD_DIR / f"serving-frontend-{source_digest()}.jar"


def classpath(jar: Path) -> list[Path]:
    """The extension first: its ModelResponseDecoder takes the place of multi-model-server's
    (see that class for why). No "." (multi-model-server's own launcher puts one first): a
    class archive is only used when every directory on the class path is empty, and the
    JVM's working directory never is."""
    return [jar, *mms_jars()]


# ------------------------------------------------------------------------------ the jar


def installed_jar() -> Path:
    """The frontend jar for these sources; built at build time (serving.frontend_build)."""
    jar = frontend_jar()
    if not jar.is_file():
        raise FrontendError(
            f"the frontend extension {jar} is missing (or was built from other sources): build "
            "it with `python -m serving.frontend_build jar` (needs a JDK's javac)"
        )
    return jar


# ------------------------------------------------------------------- the class-data archive


def archive_key(java: Path, jars: Sequence[Path]) -> str:
    """What a class-data archive is only valid for: this JVM build, these jars, these flags."""
    java = java.resolve()
    libjvm = java.parent.parent / "lib" / "server" / "libjvm.so"
    digest = hashlib.sha256(str(java).encode())
    for path in (libjvm, *jars):
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}:{stat and stat.st_size}:{stat and stat.st_mtime_ns}".encode())
    digest.update(" ".join(START_UP_FLAGS).encode())
    return digest.hexdigest()[:12]


def archive_path(java: Path, jars: Sequence[Path]) -> Path:
    return BUILD_DIR / f"classes-{archive_key(java, jars)}.jsa"


# ----------------------------------------------- the config file and environment of the JVM


def mms_properties(
    settings: contract.ServeSettings,
    runtime: Path,
    handler: str = HANDLER,
    host: str = "0.0.0.0",  # SageMaker reaches the container on its own address
) -> str:
    """multi-model-server's config file (`-f`). Here, not in serving.server, because the
    archive run (serving.frontend_build) starts the same JVM with it."""
    if settings.multi_model:
        # SageMaker's multi-model contract: the management API (POST /models, ...) on the
        # same port as /ping and /models/<name>/invoke.
        management = f"http://{host}:{settings.port}"
    else:
        # Model management stays private: a unix socket in the runtime dir, no second port.
        management = f"unix:{runtime / 'management.sock'}"
    properties = {
        "inference_address": f"http://{host}:{settings.port}",
        "management_address": management,
        "default_service_handler": handler,
        "default_workers_per_model": settings.workers,
        # multi-model-server numbers the GPUs its workers get from 0 up to this; the
        # workers see only the visible ones, numbered the same way.
        "number_of_gpu": settings.gpus,
        # The plain `default_response_timeout` is read as minutes by multi-model-server 1.1.
        "default_response_timeout_seconds": settings.response_timeout_s,
        "max_request_size": settings.max_payload_bytes,
        "max_response_size": settings.max_payload_bytes,
        "decode_input_request": "false",
        "preload_model": "false",
    }
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def model_server_env(settings: contract.ServeSettings, runtime: Path) -> dict[str, str]:
    """The server's environment: private temp dirs, the thread budget, resolved settings.

    The workers run this interpreter, where the serving package is installed: they need
    no import path of their own.
    """
    return {
        **os.environ,
        "TMPDIR": str(runtime),
        "TEMP": str(runtime),
        "LOG_LOCATION": str(runtime / "logs"),
        "METRICS_LOCATION": str(runtime / "logs"),
        contract.STATE_DIR_ENV: str(runtime),
        contract.PRELOAD_SOCKET_ENV: str(runtime / PRELOAD_SOCKET),
        contract.TORCH_THREADS_ENV: str(settings.torch_threads),
        contract.BACKEND_ENV: settings.backend,  # resolved once, by `serve`
        "PYTHONUNBUFFERED": "1",
    }


# ------------------------------------------------------------------------ the command line


@dataclass(frozen=True)
class Launch:
    """Everything the JVM command needs besides the settings."""

    java: Path
    jar: Path
    runtime: Path  # serve's private folder: config, sockets, temp files
    config_file: Path
    model_store: Path
    models: str | None  # "name=url" of a model served from the start, None for multi-model


def system_properties(settings: contract.ServeSettings) -> dict[str, str]:
    """The frontend extension's settings (Settings.java): numbers, and the JSON it answers."""
    limit_mb = settings.max_payload_bytes // (1024 * 1024)
    properties = {
        "serving.batch_size": str(settings.batch_size),
        "serving.max_batch_delay_ms": str(settings.max_batch_delay_ms),
        "serving.max_request_bytes": str(settings.max_payload_bytes),
        "serving.too_large_body": error_body(
            f"the request body is over the limit of {settings.max_payload_bytes:,} bytes "
            f"({contract.MAX_PAYLOAD_ENV}={limit_mb})"
        ).decode(),
        "serving.form_body": error_body(
            "a form body (application/x-www-form-urlencoded or multipart) is not an image: "
            f"send the file's bytes with its own Content-Type, e.g. {content_types.JPEG} "
            "(curl -d and Python's urllib send a form type when none is given)"
        ).decode(),
    }
    properties["serving.execution_parameters"] = json.dumps(execution_parameters(settings))
    properties["serving.max_models"] = str(settings.max_models if settings.multi_model else 0)
    properties["serving.model_limit_body"] = error_body(
        f"this endpoint holds at most {settings.max_models} models at once "
        f"({contract.MAX_MODELS_ENV}): unload one (DELETE /models/<name>) first"
    ).decode()
    # DELETE /models/<name> waits for the model's requests in flight at most this long.
    properties["serving.drain_timeout_s"] = str(settings.response_timeout_s)
    properties["serving.model_unloading_body"] = error_body(
        "the model is being unloaded: load it again (POST /models) before invoking it"
    ).decode()
    properties["serving.model_loading_body"] = error_body(
        "the model is being loaded: retry once its POST /models has answered"
    ).decode()
    properties["serving.retry_after_s"] = str(RETRY_AFTER_S)
    return properties


def execution_parameters(settings: contract.ServeSettings) -> dict[str, Any]:
    """Batch Transform's defaults for this container (GET /execution-parameters): enough
    requests in flight to fill every worker's batch, one image per request, the payload limit."""
    return {
        "MaxConcurrentTransforms": settings.workers * settings.batch_size,
        "BatchStrategy": BATCH_STRATEGY,
        "MaxPayloadInMB": settings.max_payload_bytes // (1024 * 1024),
    }


def jvm_flags(settings: contract.ServeSettings, launch: Launch) -> list[str]:
    """SAGEMAKER_MODEL_SERVER_VMARGS, when set, replaces the start-up flags and the archive."""
    if settings.vmargs:
        return settings.vmargs.split()
    flags = list(START_UP_FLAGS)
    archive = archive_path(launch.java, classpath(launch.jar))
    if archive.is_file():
        flags.append(f"-XX:SharedArchiveFile={archive}")
    else:
        logger.info(
            "no class-data archive for this JVM (`python -m serving.frontend_build build` writes "
            "one): the frontend starts about 1 s slower"
        )
    return flags


def jvm_command(
    settings: contract.ServeSettings,
    launch: Launch,
    flags: Sequence[str] | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The JVM command line; `flags` replaces the start-up flags (jvm_flags) when given,
    `python` is what the frontend runs its Python backends with."""
    properties = {
        "model_server_home": str(mms_home()),
        "log4j.configurationFile": LOG_CONFIG.as_uri(),
        "java.io.tmpdir": str(launch.runtime),  # worker sockets
        **system_properties(settings),
    }
    command = [
        str(launch.java),
        *(jvm_flags(settings, launch) if flags is None else flags),
        *(f"-D{name}={value}" for name, value in properties.items()),
        "-cp", os.pathsep.join(map(str, classpath(launch.jar))),
        MAIN_CLASS,
        "--python", python,
        "-f", str(launch.config_file),
        "-s", str(launch.model_store),
    ]  # fmt: skip
    if launch.models:
        command += ["-m", launch.models]
    return command


def free_port() -> int:
    """A free TCP port below 32767 (multi-model-server's highest), free on every interface:
    the server listens on 0.0.0.0 (mms_properties), so a port taken on any address won't do."""
    for _ in range(200):
        port = random.randint(20000, contract.MAX_PORT - 1)
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise FrontendError(f"no free port found between 20000 and {contract.MAX_PORT - 1}")
