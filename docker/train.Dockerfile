# Training image. SageMaker runs `docker run IMAGE train`; `train` is the trainer package's
# command, which runs the training job through the sagemaker-training toolkit.
#
# Build from the repository root (.dockerignore keeps the context to what is copied here):
#   docker build -f docker/train.Dockerfile -t image-classifier-train .
#   docker build -f docker/train.Dockerfile --build-arg VARIANT=cpu -t image-classifier-train:cpu .
# or let ./build_and_push.sh do it. BuildKit is needed (RUN --mount); there is no `# syntax=`
# line because the front end built into Docker 20.10 and later reads this file, and the line
# would make every build fetch one from Docker Hub.

# gpu: CUDA torch from PyPI on a small nvidia/cuda base; cpu: CPU-only torch on Ubuntu.
ARG VARIANT=gpu
# `base`, not `cudnn-runtime`: the torch wheels bring their own CUDA and cuDNN libraries
# (nvidia-* wheels), so a cuDNN base image would hold a second copy of several GB.
# The base image adds the NVIDIA runtime settings and the cuda-compat libraries.
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

# ---- build-base: the compilers the packages need (never shipped) ----
FROM ${BUILD_BASE_IMAGE} AS build-base
ARG PYTHON_SOURCE
ARG SYSTEM_PYTHON
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# gcc and libc headers: sagemaker-training builds a C extension from its sdist (against
# SYSTEM_PYTHON's headers where that is the Python).
# The archives' package versions are not pinned: they drop superseded versions.
# hadolint ignore=DL3008,SC2086
RUN case "${PYTHON_SOURCE}" in \
      uv) python_packages="" ;; \
      system) python_packages="${SYSTEM_PYTHON} ${SYSTEM_PYTHON}-venv ${SYSTEM_PYTHON}-dev" ;; \
      *) echo "PYTHON_SOURCE must be uv or system, got ${PYTHON_SOURCE}" >&2; exit 1 ;; \
    esac \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev ${python_packages} \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# ---- python-uv / python-system: the venv /opt/venv (and its Python under /opt/python) ----
FROM build-base AS python-uv
# The project is tested on Python 3.11 (sagemaker-training 4.9 and smdebug were checked on
# it); Ubuntu 24.04 ships 3.12.
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

# ---- build: the pinned packages and this project's ----
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
COPY container_train/requirements.txt constraints.txt /tmp/requirements/
# The same pinned file `make venv` installs. For VARIANT=cpu (or a TORCH_CUDA flavour),
# torch and torchvision come first from PyTorch's index, without dependencies
# (2.x.y+cpu satisfies ==2.x.y); every other package still resolves from PyPI under
# constraints.txt, and a cpu build pulls in no CUDA wheel.
WORKDIR /tmp/requirements
# The CUDA libraries of the nvidia-* wheels, half the venv, move to /opt/venv-cuda (a link
# stays in their place) and ship as a layer of their own: engines and registries compress,
# upload and download the layers of an image side by side.
RUN --mount=type=cache,target=/root/.cache/pip \
    case "${VARIANT}" in \
      cpu) flavor=cpu ;; \
      gpu) flavor="${TORCH_CUDA}" ;; \
      *) echo "VARIANT must be cpu or gpu, got ${VARIANT}" >&2; exit 1 ;; \
    esac \
 && if [ -n "${flavor}" ]; then \
      pip install --no-deps --index-url "${TORCH_INDEX_BASE_URL}/${flavor}" \
        "torch==$(sed -n 's/^torch==\([^ ]*\).*/\1/p' requirements.txt)+${flavor}" \
        "torchvision==$(sed -n 's/^torchvision==\([^ ]*\).*/\1/p' requirements.txt)+${flavor}"; \
    fi \
 && pip install -r requirements.txt -c constraints.txt \
 && mkdir -p /opt/venv-cuda \
 && for wheels in /opt/venv/lib/python3.*/site-packages/nvidia; do \
      if [ -d "${wheels}" ]; then mv "${wheels}" /opt/venv-cuda/ && ln -s /opt/venv-cuda/nvidia "${wheels}"; fi; \
    done
# This project's packages (the `train` command among them), nothing else resolved.
COPY artifact /tmp/packages/artifact
COPY container_train /tmp/packages/container_train
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/packages/artifact /tmp/packages/container_train \
 && pip check

# ---- weights: ResNet50 ImageNet weights baked in, so jobs run with network isolation ----
FROM build AS weights
# false: an image without them (for a build machine that cannot download them); its jobs
# need pretrained=false, and with pretrained=true fail at once saying so.
ARG BAKE_WEIGHTS=true
ENV TORCH_HOME=/opt/torch
RUN case "${BAKE_WEIGHTS}" in \
      true) python -c "from trainer.model import fetch_pretrained_weights; print(fetch_pretrained_weights())" ;; \
      false) mkdir -p "${TORCH_HOME}" ;; \
      *) echo "BAKE_WEIGHTS must be true or false, got ${BAKE_WEIGHTS}" >&2; exit 1 ;; \
    esac

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
LABEL org.opencontainers.image.title="image-classifier-train" \
      org.opencontainers.image.description="SageMaker training image: ResNet50 + head fine-tuning (${VARIANT})"
# With PYTHON_SOURCE=system the venv's python is a link to the apt interpreter.
# hadolint ignore=DL3008,SC2086
RUN python_packages="" \
 && if [ "${PYTHON_SOURCE}" = system ]; then python_packages="${SYSTEM_PYTHON}"; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates ${python_packages} \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv-cuda /opt/venv-cuda
COPY --from=build /opt/venv /opt/venv
COPY --from=weights /opt/torch /opt/torch
# Runs as root: SageMaker mounts /opt/ml (model, output, checkpoints) owned by root, and the
# job must write there.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TORCH_HOME=/opt/torch \
    SAGEMAKER_BASE_DIR=/opt/ml \
    SMDEBUG_CONFIG_FILE_PATH=/opt/ml/input/config/debughookconfig.json
WORKDIR /opt/ml
CMD ["train"]
