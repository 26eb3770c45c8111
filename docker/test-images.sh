#!/usr/bin/env bash
# `make test-images`: build both images from docker/*.Dockerfile on a private Docker engine,
# run TEST_COMMAND (the container tests) against them, print their sizes, then remove
# everything and stop the engine. Debian 12, as root; about 30 GB of free disk.
#   docker/test-images.sh TEST_COMMAND [ARG...]
#
# It needs to reach only Debian's archive and PyPI: build arguments put, in place of what
# comes from elsewhere, a Debian 12 base image made from the machine's apt mirror for every
# base image, Debian's python3.11 for uv's CPython, and no ImageNet weights in the training
# image.
# Both images are the gpu variant: PyPI's torch (the cpu one comes from PyTorch's index).
set -euo pipefail

readonly PROG=test-images.sh
readonly TRAIN_IMAGE=image-classifier-train:test
readonly SERVE_IMAGE=image-classifier-serve:test

fail() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

[[ $# -gt 0 ]] || fail "usage: $PROG TEST_COMMAND [ARG...]"
[[ $(id -u) -eq 0 ]] || fail "needs root: it installs Debian packages and runs its own Docker daemon"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."

started=$SECONDS
step() { printf '== %-44s %5d s\n' "$*" $((SECONDS - started)) >&2; }

"$here/engine.sh" install
step "engine installed"
state=$(mktemp -d /var/lib/test-images.XXXXXX)
trap '"$here/engine.sh" stop "$state"; step "engine stopped, its data deleted"' EXIT
# Interrupted too: bash runs no EXIT trap when a signal ends it.
trap 'exit 130' INT
trap 'exit 143' TERM
DOCKER_HOST=$("$here/engine.sh" start "$state")
export DOCKER_HOST PATH="$state/bin:$PATH" DOCKER_BUILDKIT=1
step "engine started: Docker $(docker version --format '{{.Server.Version}}')"

base=$("$here/base-image.sh")
step "base image $base"

# The stand-ins (BAKE_WEIGHTS is the training image's); the tests build with them too.
stand_ins=(PYTHON_SOURCE=system "BUILD_BASE_IMAGE=$base" "CPU_BASE_IMAGE=$base"
  "GPU_BASE_IMAGE=$base" BAKE_WEIGHTS=false)
build() { # IMAGE TAG: docker build, its log kept in STATE_DIR
  local args=() arg
  for arg in VARIANT=gpu "${stand_ins[@]}"; do args+=(--build-arg "$arg"); done
  docker build --network host --progress plain --file "docker/$1.Dockerfile" \
    "${args[@]}" --tag "$2" . >"$state/build-$1.log" 2>&1
}
# Side by side: each build spends most of its time in one pip process and one layer export.
build serve "$SERVE_IMAGE" &
serve_build=$!
build train "$TRAIN_IMAGE" &
train_build=$!
for job in "serve:$serve_build" "train:$train_build"; do
  if ! wait "${job#*:}"; then
    tail -n 40 "$state/build-${job%%:*}.log" >&2
    fail "the ${job%%:*} image did not build (the end of its log is above)"
  fi
done
step "images built"

# Both images and their build cache: the engine's peak of disk (the push test prunes the cache).
printf 'engine data after the builds: %s\n' "$(du -sh "$state" | cut -f1)" >&2
for image in "$TRAIN_IMAGE" "$SERVE_IMAGE"; do
  printf '%s: %s bytes\n' "$image" "$(docker image inspect --format '{{.Size}}' "$image")" >&2
done

export TEST_IMAGES_TRAIN=$TRAIN_IMAGE TEST_IMAGES_SERVE=$SERVE_IMAGE
export TEST_IMAGES_STAND_INS="${stand_ins[*]}"
"$@"
step "tests passed"
