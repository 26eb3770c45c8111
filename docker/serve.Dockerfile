# Serving image. SageMaker runs `docker run IMAGE serve` and talks to port 8080
# (GET /ping, POST /invocations); `serve` starts multi-model-server with the handler.
#
# Build from the repository root (.dockerignore keeps the context to what is copied here):
#   docker build -f docker/serve.Dockerfile -t image-classifier-serve .                        # CPU, ONNX
#   docker build -f docker/serve.Dockerfile --build-arg VARIANT=gpu -t image-classifier-serve:gpu .
# or let ./build_and_push.sh do it. BuildKit is needed (RUN --mount); there is no `# syntax=`
# line because the front end built into Docker 20.10 and later reads this file, and the line
# would make every build fetch one from Docker Hub.

# cpu (default): ONNX Runtime from PyPI and no torch (container_serve/requirements-cpu.txt),
# for ml.t2/ml.m5/ml.c5 and serverless endpoints; gpu: CUDA torch (requirements.txt) on an
# nvidia/cuda base.
ARG VARIANT=cpu
# `base`, not `cudnn-runtime`: the CUDA torch wheels bring their own CUDA and cuDNN libraries.
ARG GPU_BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04
ARG CPU_BASE_IMAGE=ubuntu:24.04
ARG BUILD_BASE_IMAGE=ubuntu:24.04
# Where Python comes from. uv: a standalone CPython (PYTHON_VERSION, below) that uv installs
# under /opt/python, the same on every base. system: the base image's own SYSTEM_PYTHON from
# its apt archive (Debian 12's python3.11), nothing downloaded besides apt and PyPI packages;
# uv's image is then never pulled.
ARG PYTHON_SOURCE=uv
ARG SYSTEM_PYTHON=python3.11
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---- build-base: the JDK and Python's apt packages (never shipped) ----
FROM ${BUILD_BASE_IMAGE} AS build-base
ARG PYTHON_SOURCE
ARG SYSTEM_PYTHON
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The archives' package versions are not pinned: they drop superseded versions.
# A JDK here (never shipped) compiles serve's small frontend extension (serving/java/);
# the runtime stage only needs the JRE. (The JDK's postinst links man pages: the minimal
# base image may lack the folder.)
# hadolint ignore=DL3008,SC2086
RUN case "${PYTHON_SOURCE}" in \
      uv) python_packages="" ;; \
      system) python_packages="${SYSTEM_PYTHON} ${SYSTEM_PYTHON}-venv" ;; \
      *) echo "PYTHON_SOURCE must be uv or system, got ${PYTHON_SOURCE}" >&2; exit 1 ;; \
    esac \
 && mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates openjdk-17-jdk-headless ${python_packages} \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# ---- python-uv / python-system: the venv /opt/venv (and its Python under /opt/python) ----
FROM build-base AS python-uv
# Python 3.11 as in the training image and the tests (Ubuntu 24.04 ships 3.12).
ARG PYTHON_VERSION=3.11.18
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed
RUN uv python install "${PYTHON_VERSION}" \
 && "$(uv python find "${PYTHON_VERSION}")" -m venv /opt/venv

FROM build-base AS python-system
ARG SYSTEM_PYTHON
# /opt/python stays empty: the runtime stage copies it whatever the source.
RUN "${SYSTEM_PYTHON}" -m venv /opt/venv \
 && mkdir -p /opt/python

# ---- build: the pinned packages and this project's (only /opt/python and /opt/venv ship) ----
# python-uv / python-system are the stages above, not registry images.
# hadolint ignore=DL3006
FROM python-${PYTHON_SOURCE} AS build
ARG VARIANT
# PyTorch's own wheel indexes: <base>/cpu, <base>/cu126, ...
ARG TORCH_INDEX_BASE_URL=https://download.pytorch.org/whl
# gpu only: empty = PyPI's torch (CUDA 13, driver >= 580); e.g. cu126 for an older
# driver, together with a matching GPU_BASE_IMAGE (nvidia/cuda:12.6.3-base-ubuntu24.04).
ARG TORCH_CUDA=
ENV PATH=/opt/venv/bin:${PATH}
COPY container_serve/requirements.txt container_serve/requirements-cpu.txt constraints.txt /tmp/requirements/
WORKDIR /tmp/requirements
# cpu: requirements-cpu.txt, the same pins without torch and torchvision, with onnxruntime.
# gpu: requirements.txt, the file `make venv` installs; with a TORCH_CUDA flavour, torch and
# torchvision come first from PyTorch's index, without dependencies (2.x.y+cu126 satisfies
# ==2.x.y). Every other package resolves from PyPI under constraints.txt.
# torch's C++ headers (about 60 MB) only serve compiling extensions: dropped.
# The CUDA libraries of the nvidia-* wheels, half the venv, move to /opt/venv-cuda (a link
# stays in their place) and ship as a layer of their own: engines and registries compress,
# upload and download the layers of an image side by side.
RUN --mount=type=cache,target=/root/.cache/pip \
    case "${VARIANT}" in \
      cpu) requirements=requirements-cpu.txt flavor="" ;; \
      gpu) requirements=requirements.txt flavor="${TORCH_CUDA}" ;; \
      *) echo "VARIANT must be cpu or gpu, got ${VARIANT}" >&2; exit 1 ;; \
    esac \
 && if [ -n "${flavor}" ]; then \
      pip install --no-deps --index-url "${TORCH_INDEX_BASE_URL}/${flavor}" \
        "torch==$(sed -n 's/^torch==\([^ ]*\).*/\1/p' requirements.txt)+${flavor}" \
        "torchvision==$(sed -n 's/^torchvision==\([^ ]*\).*/\1/p' requirements.txt)+${flavor}"; \
    fi \
 && pip install -r "${requirements}" -c constraints.txt \
 && rm -rf /opt/venv/lib/python3.*/site-packages/torch/include \
 && mkdir -p /opt/venv-cuda \
 && for wheels in /opt/venv/lib/python3.*/site-packages/nvidia; do \
      if [ -d "${wheels}" ]; then mv "${wheels}" /opt/venv-cuda/ && ln -s /opt/venv-cuda/nvidia "${wheels}"; fi; \
    done
# This project's packages (the `serve` command among them), nothing else resolved.
COPY artifact /tmp/packages/artifact
COPY container_serve /tmp/packages/container_serve
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/packages/artifact /tmp/packages/container_serve \
 && pip check \
 && python -m serving.frontend_build jar

# ---- runtime ----
FROM ${CPU_BASE_IMAGE} AS base-cpu
FROM ${GPU_BASE_IMAGE} AS base-gpu
# base-cpu / base-gpu are the stages above, not registry images.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
ARG PYTHON_SOURCE
ARG SYSTEM_PYTHON
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="image-classifier-serve" \
      org.opencontainers.image.description="SageMaker serving image: image classifier on multi-model-server (${VARIANT})" \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true
# multi-model-server is a Java server: a headless JRE is all it needs. `serve` writes its
# MMS config, pid file and sockets to a private folder under TMPDIR (not /etc), so the
# unprivileged user needs no write access outside /tmp.
# (The JRE's postinst links man pages: the minimal base image may lack the folder.)
# With PYTHON_SOURCE=system the venv's python is a link to the apt interpreter.
# hadolint ignore=DL3008,SC2086
RUN python_packages="" \
 && if [ "${PYTHON_SOURCE}" = system ]; then python_packages="${SYSTEM_PYTHON}"; fi \
 && mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates openjdk-17-jre-headless ${python_packages} \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/model-server \
      --shell /usr/sbin/nologin model-server
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv-cuda /opt/venv-cuda
COPY --from=build /opt/venv /opt/venv
# The JVM's class-data archive for this JRE and these jars (the frontend starts about 1 s
# sooner): written by one start and stop of the frontend with a stub model, on loopback.
# It must be written here, with the JRE that runs it, not in the build stage.
RUN /opt/venv/bin/python -m serving.frontend_build archive
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SAGEMAKER_BASE_DIR=/opt/ml \
    SAGEMAKER_BIND_TO_PORT=8080 \
    SAGEMAKER_MODEL_SERVER_TIMEOUT=60 \
    SAGEMAKER_MAX_PAYLOAD_IN_MB=6 \
    SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT=application/json \
    SAGEMAKER_STARTUP_TIMEOUT=600
# model-server (uid 10001). MMS writes logs/ and its model export folder under the working
# directory, so that is its home. SERVE_USER=root is the way back should a platform need it.
ARG SERVE_USER=10001:10001
USER ${SERVE_USER}
WORKDIR /home/model-server
EXPOSE 8080
CMD ["serve"]
