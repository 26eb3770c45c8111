#!/usr/bin/env bash
# Build the training and serving images, push them to Amazon ECR, and record their URIs
# in build/images.json for the launch scripts. Run ./build_and_push.sh --help.
# Written for bash 3.2 too (macOS's /bin/bash): no associative arrays, and empty arrays
# expanded as ${a[@]+"${a[@]}"} under `set -u`.
set -euo pipefail

readonly PROG=build_and_push.sh

usage() {
  cat <<'EOF'
Usage: ./build_and_push.sh [train|serve|all] [options]

Builds the SageMaker training and/or serving image, tags it with the given tag and the
git commit, pushes both tags to ECR (creating the repository, with scan on push, if it
is missing) and writes the image URIs to build/images.json, which scripts/cloud.py reads.

Options:
  --tag TAG            image tag (default: latest); the commit tag is added as well
  --region REGION      AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, then
                       `aws configure get region`)
  --cpu | --gpu        the images' variant (default: train gpu, serve cpu: ONNX Runtime,
                       no torch); a non-default variant goes to its own repository, e.g.
                       image-classifier-serve-gpu
  --platform P         docker build platform (default: linux/amd64, what SageMaker runs)
  --build-network MODE docker build's network for RUN steps: host or none (default:
                       the engine's default, its bridge network); host where the engine
                       has no bridge network
  --build-arg K=V      extra docker build argument, repeatable (e.g. TORCH_CUDA=cu126
                       with GPU_BASE_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04)
  --repo-prefix NAME   ECR repository name prefix (default: $IMAGE_REPO_PREFIX or
                       image-classifier): repositories NAME-train and NAME-serve
  --registry HOST      registry host[:port] to log in and push to (default: the
                       account's ECR registry, ACCOUNT.dkr.ecr.REGION.amazonaws.com)
  --images-file PATH   where to write the URIs (default: $IMAGES_FILE or build/images.json)
  --no-push            build and tag locally only: no repository, login or push
  --no-docker          run the AWS part for real (identity, repositories, login token)
                       and print the docker commands instead of running them
  -h, --help           show this help

Needs the AWS CLI with credentials and, unless --no-docker, Docker 20.10 or newer with
BuildKit (from Docker 23 on, the buildx plugin). AWS_ENDPOINT_URL, if set, points the
AWS CLI at another endpoint (e.g. a local emulator).
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}
usage_error() {
  printf '%s: %s (see --help)\n' "$PROG" "$*" >&2
  exit 2
}

# ---- arguments ----
what=all
tag=latest
region=""
variant=""
platform=linux/amd64
network_args=()
push=true
use_docker=true
# A single image manifest: SageMaker does not accept the manifest list that a provenance
# attestation makes. Printed with --no-docker; dropped where `docker build` lacks the flag.
provenance_args=(--provenance=false)
build_args=()
registry=""
repo_prefix="${IMAGE_REPO_PREFIX:-image-classifier}"
images_file="${IMAGES_FILE:-}"

need_value() {
  [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
  case $1 in
    train | serve | all) what=$1 ;;
    --tag) need_value "$@"; tag=$2; shift ;;
    --tag=*) tag=${1#*=} ;;
    --region) need_value "$@"; region=$2; shift ;;
    --region=*) region=${1#*=} ;;
    --cpu) variant=cpu ;;
    --gpu) variant=gpu ;;
    --platform) need_value "$@"; platform=$2; shift ;;
    --platform=*) platform=${1#*=} ;;
    --build-network) need_value "$@"; network_args=(--network "$2"); shift ;;
    --build-network=*) network_args=(--network "${1#*=}") ;;
    --build-arg) need_value "$@"; build_args+=(--build-arg "$2"); shift ;;
    --build-arg=*) build_args+=(--build-arg "${1#*=}") ;;
    --repo-prefix) need_value "$@"; repo_prefix=$2; shift ;;
    --repo-prefix=*) repo_prefix=${1#*=} ;;
    --registry) need_value "$@"; registry=$2; shift ;;
    --registry=*) registry=${1#*=} ;;
    --images-file) need_value "$@"; images_file=$2; shift ;;
    --images-file=*) images_file=${1#*=} ;;
    --no-push) push=false ;;
    --no-docker) use_docker=false ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument: $1" ;;
  esac
  shift
done

# ECR's rules for tags and repository names.
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] \
  || usage_error "invalid tag '$tag': letters, digits, '_', '.', '-' (up to 128, not starting with '.' or '-')"
[[ $repo_prefix =~ ^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]] \
  || usage_error "invalid repository prefix '$repo_prefix': lower-case letters, digits, '.', '_', '-', '/'"
if [[ ${#network_args[@]} -gt 0 ]]; then
  case ${network_args[1]} in
    default | host | none) ;;
    *) usage_error "invalid build network '${network_args[1]}': host, none or default" ;;
  esac
fi
[[ -z $registry || $registry =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$ ]] \
  || usage_error "invalid registry '$registry': a host name, optionally with :PORT"

case $what in
  all) images=(train serve) ;;
  *) images=("$what") ;;
esac

# A given images file is relative to the caller's directory; everything else (Dockerfiles,
# build context, the default images file) to the repository root.
if [[ -n $images_file && $images_file != /* ]]; then
  images_file="$PWD/$images_file"
fi
cd "$(dirname "${BASH_SOURCE[0]}")"
images_file=${images_file:-build/images.json}

# ---- tools ----
command -v aws >/dev/null 2>&1 \
  || die "the AWS CLI ('aws') is not installed or not on PATH; install it (e.g. 'pip install awscli') and configure credentials"
if $use_docker; then
  command -v docker >/dev/null 2>&1 \
    || die "'docker' is not installed or not on PATH; install Docker, or pass --no-docker to run only the AWS part"
  docker info >/dev/null 2>&1 \
    || die "the Docker daemon is not running or this user may not use it ('docker info' failed); start Docker, or pass --no-docker"
  # The Dockerfiles use BuildKit (RUN --mount). From Docker 23 on `docker build` is BuildKit
  # through the buildx plugin; Docker 18.09 to 22 (Debian 12's 20.10 has no buildx) have it
  # built in, used when DOCKER_BUILDKIT=1.
  if ! docker buildx version >/dev/null 2>&1; then
    client=$(docker version --format '{{.Client.Version}}' 2>/dev/null || true)
    major=${client%%.*}
    [[ $major =~ ^[0-9]+$ && $major -lt 23 ]] \
      || die "Docker BuildKit is required: install the buildx plugin (Docker client '${client:-unknown}' has none), or use a Docker 20.10 client"
    export DOCKER_BUILDKIT=1
  fi
  # --provenance=false only where `docker build` knows the flag (buildx 0.10 and later, which
  # would otherwise add a provenance attestation); the BuildKit built into Docker 20.10 adds
  # none. The help is read whole into a variable: `| grep -q` may end the pipe early.
  build_help=$(docker build --help 2>&1 || true)
  if [[ $build_help != *--provenance* ]]; then
    provenance_args=()
  fi
fi

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

# ---- AWS: region, account ----
region=${region:-${AWS_REGION:-${AWS_DEFAULT_REGION:-}}}
if [[ -z $region ]]; then
  region=$(aws configure get region 2>/dev/null || true)
fi
[[ -n $region ]] \
  || die "no AWS region: pass --region, set AWS_REGION, or run 'aws configure set region REGION'"

if ! account=$(aws sts get-caller-identity --region "$region" --query Account --output text 2>"$errors"); then
  die "cannot read the AWS identity (are AWS credentials configured? try 'aws configure' or set AWS_PROFILE): $(tr '\n' ' ' <"$errors")"
fi
[[ $account =~ ^[0-9]{12}$ ]] || die "unexpected AWS account id from 'aws sts get-caller-identity': '$account'"

case $region in
  cn-*) dns_suffix=amazonaws.com.cn ;;
  *) dns_suffix=amazonaws.com ;;
esac
registry=${registry:-$account.dkr.ecr.$region.$dns_suffix}

# ---- git commit tag ----
commit_tag=""
if commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  commit_tag=$commit
  # An image built from uncommitted changes is not that commit.
  if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit_tag="$commit-dirty"
  fi
else
  log "not a git checkout: tagging with '$tag' only"
fi
tags=("$tag")
if [[ -n $commit_tag && $commit_tag != "$tag" ]]; then
  tags+=("$commit_tag")
fi

log "account $account, region $region, tag $tag${commit_tag:+, commit tag $commit_tag}"

# ---- helpers ----
default_variant() {
  case $1 in
    train) echo gpu ;;
    serve) echo cpu ;;
  esac
}

variant_of() { # IMAGE
  echo "${variant:-$(default_variant "$1")}"
}

repository_name() { # IMAGE
  local name="$repo_prefix-$1" image_variant
  image_variant=$(variant_of "$1")
  if [[ $image_variant != "$(default_variant "$1")" ]]; then
    name="$name-$image_variant"
  fi
  echo "$name"
}

image_uri() { # IMAGE (repository URI, without tag)
  echo "$registry/$(repository_name "$1")"
}

building() { # IMAGE
  [[ " ${images[*]} " == *" $1 "* ]]
}

ensure_repository() { # NAME
  if aws ecr describe-repositories --region "$region" --repository-names "$1" >/dev/null 2>"$errors"; then
    log "ECR repository $1 exists"
  elif grep -q RepositoryNotFoundException "$errors"; then
    aws ecr create-repository --region "$region" --repository-name "$1" \
      --image-scanning-configuration scanOnPush=true >/dev/null 2>"$errors" \
      || die "cannot create ECR repository $1: $(tr '\n' ' ' <"$errors")"
    log "created ECR repository $1 (scan on push)"
  else
    die "cannot read ECR repository $1: $(tr '\n' ' ' <"$errors")"
  fi
}

# Runs a docker command, or with --no-docker prints it (shell-quoted) on stdout.
docker_cmd() {
  if $use_docker; then
    log "+ docker $*"
    docker "$@"
  else
    local quoted
    printf -v quoted '%q ' docker "$@"
    echo "${quoted% }"
  fi
}

# ---- ECR: repositories and login ----
if $push; then
  for image in "${images[@]}"; do
    ensure_repository "$(repository_name "$image")"
  done
fi

if $push; then
  if $use_docker; then
    log "+ aws ecr get-login-password | docker login --username AWS --password-stdin $registry"
    aws ecr get-login-password --region "$region" 2>"$errors" \
      | docker login --username AWS --password-stdin "$registry" >&2 \
      || die "docker login to $registry failed: $(tr '\n' ' ' <"$errors")"
  else
    # Fetch a token for real (proves the credentials may pull/push), never print it.
    token=$(aws ecr get-login-password --region "$region" 2>"$errors") \
      || die "cannot get an ECR login token: $(tr '\n' ' ' <"$errors")"
    [[ -n $token ]] || die "empty ECR login token"
    unset token
    echo "aws ecr get-login-password --region $region | docker login --username AWS --password-stdin $registry"
  fi
fi

# ---- build, tag, push ----
for image in "${images[@]}"; do
  uri=$(image_uri "$image")
  tag_args=()
  for t in "${tags[@]}"; do
    tag_args+=(--tag "$uri:$t")
  done
  docker_cmd build --file "docker/$image.Dockerfile" --platform "$platform" \
    ${network_args[@]+"${network_args[@]}"} \
    --build-arg "VARIANT=$(variant_of "$image")" ${build_args[@]+"${build_args[@]}"} \
    ${provenance_args[@]+"${provenance_args[@]}"} "${tag_args[@]}" .
  if $push; then
    for t in "${tags[@]}"; do
      docker_cmd push "$uri:$t"
    done
  fi
done

# ---- image URIs ----
# An image not built in this run keeps its URI from the previous file (same account
# and region), else null.
previous_uri() { # KEY
  [[ -f $images_file ]] || return 0
  grep -q "\"account\": \"$account\"" "$images_file" || return 0
  grep -q "\"region\": \"$region\"" "$images_file" || return 0
  sed -n "s/^  \"$1\": \"\\([^\"]*\\)\",\\{0,1\\}\$/\\1/p" "$images_file"
}

json_value() { # URI-or-empty
  if [[ -n $1 ]]; then printf '"%s"' "$1"; else printf 'null'; fi
}

result_uri() { # IMAGE
  if building "$1"; then
    echo "$(image_uri "$1"):$tag"
  else
    previous_uri "$1"
  fi
}
train_uri=$(result_uri train)
serve_uri=$(result_uri serve)

mkdir -p "$(dirname "$images_file")"
tmp_file="$images_file.tmp.$$"
cat >"$tmp_file" <<EOF
{
  "region": "$region",
  "account": "$account",
  "tag": "$tag",
  "train": $(json_value "$train_uri"),
  "serve": $(json_value "$serve_uri")
}
EOF
mv "$tmp_file" "$images_file"

for image in "${images[@]}"; do
  echo "$image image: $(image_uri "$image"):$tag"
done
log "wrote $images_file"
