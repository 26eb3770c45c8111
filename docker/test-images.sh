#!/usr/bin/env bash
# `make test-images`: build the images from docker/*.Dockerfile on a private Docker engine
# (training, serving gpu, serving cpu), run TEST_COMMAND (the container tests) against them,
# print their sizes, then remove everything and stop the engine. Debian 12, as root; about
# 30 GB of free disk.
#   docker/test-images.sh TEST_COMMAND [ARG...]
#
# It needs to reach only Debian's archive and PyPI: build arguments put, in place of what
# comes from elsewhere, a Debian 12 base image made from the machine's apt mirror for every
# base image, Debian's python3.11 for uv's CPython, and no ImageNet weights in the training
# image.
# The training image and the gpu serving image carry PyPI's torch; the cpu serving image has
# ONNX Runtime and no torch. TEST_IMAGES_ONLY=serve-cpu builds and tests that one alone.
set -euo pipefail

readonly PROG=test-images.sh
readonly TRAIN_IMAGE=image-classifier-train:test
readonly SERVE_IMAGE=image-classifier-serve:test
readonly SERVE_CPU_IMAGE=image-classifier-serve:test-cpu

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
build() { # DOCKERFILE TAG VARIANT: docker build, its log kept in STATE_DIR
  local args=() arg
  for arg in "VARIANT=$3" "${stand_ins[@]}"; do args+=(--build-arg "$arg"); done
  docker build --network host --progress plain --file "docker/$1.Dockerfile" \
    "${args[@]}" --tag "$2" . >"$state/build-$2.log" 2>&1
}
# "name dockerfile tag variant"
images=("serve serve $SERVE_IMAGE gpu" "train train $TRAIN_IMAGE gpu"
  "serve-cpu serve $SERVE_CPU_IMAGE cpu")
if [[ -n ${TEST_IMAGES_ONLY:-} ]]; then
  for image in "${images[@]}"; do
    [[ ${image%% *} == "$TEST_IMAGES_ONLY" ]] && images=("$image") && break
  done
  [[ ${images[0]%% *} == "$TEST_IMAGES_ONLY" ]] || fail "TEST_IMAGES_ONLY: no image $TEST_IMAGES_ONLY"
fi
# Side by side: each build spends most of its time in one pip process and one layer export.
jobs=()
for image in "${images[@]}"; do
  read -r _ dockerfile tag variant <<<"$image"
  build "$dockerfile" "$tag" "$variant" &
  jobs+=("$tag $!")
done
for job in "${jobs[@]}"; do
  read -r tag pid <<<"$job"
  if ! wait "$pid"; then
    tail -n 40 "$state/build-$tag.log" >&2
    fail "the $tag image did not build (the end of its log is above)"
  fi
done
step "images built"

# The images and their build cache: the engine's peak of disk (the push test prunes the cache).
printf 'engine data after the builds: %s\n' "$(du -sh "$state" | cut -f1)" >&2
for image in "${images[@]}"; do
  read -r name _ tag _ <<<"$image"
  printf '%s: %s bytes\n' "$tag" "$(docker image inspect --format '{{.Size}}' "$tag")" >&2
  case $name in
    train) export TEST_IMAGES_TRAIN=$TRAIN_IMAGE ;;
    serve) export TEST_IMAGES_SERVE=$SERVE_IMAGE ;;
    serve-cpu) export TEST_IMAGES_SERVE_CPU=$SERVE_CPU_IMAGE ;;
  esac
done

export TEST_IMAGES_STAND_INS="${stand_ins[*]}"
"$@"
step "tests passed"
