#!/usr/bin/env bash
# A private Docker engine for building and testing the images on a Debian machine, as root.
#
#   docker/engine.sh install          install Debian's docker.io, debootstrap,
#                                     docker-registry and pigz where missing, starting no
#                                     service
#   docker/engine.sh start STATE_DIR  start a dockerd whose socket, pid file, runtime state
#                                     and data all live in STATE_DIR; print its DOCKER_HOST
#   docker/engine.sh stop STATE_DIR   remove its containers, images and build cache, stop
#                                     it by its pid, delete STATE_DIR
#
# The engine has no bridge network: containers get only the `host` and `none` networks, so
# nothing runs on a private-range address. STATE_DIR/bin holds the Docker client to use.
set -euo pipefail

readonly PROG=engine.sh
# Debian's client. Another `docker` may come first on PATH: a client from Docker 23 or
# later refuses BuildKit builds without the buildx plugin, which Debian 12 does not package.
readonly CLIENT=/usr/bin/docker
readonly DAEMON=/usr/sbin/dockerd
# The packages `make test-images` needs, as command:package. dockerd decompresses pulled
# layers with unpigz, on every core, where it finds one.
readonly PACKAGES=(dockerd:docker.io debootstrap:debootstrap docker-registry:docker-registry
  unpigz:pigz)

fail() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

install_packages() {
  local missing=() pair made_policy=false
  for pair in "${PACKAGES[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [[ ${#missing[@]} -gt 0 ]] || return 0
  command -v apt-get >/dev/null 2>&1 \
    || fail "needs Debian's packages ${missing[*]}, and this machine has no apt-get"
  # On a machine with an init system the packages would start a system dockerd (with the
  # default bridge network) and a registry on :5000; policy-rc.d forbids starting services.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=true
  fi
  local status=0 log
  log=$(mktemp)
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 || status=$?
  if $made_policy; then rm -f /usr/sbin/policy-rc.d; fi
  [[ $status -eq 0 ]] || fail "apt-get could not install ${missing[*]}: $(tail -n 1 "$log")"
  rm -f "$log"
}

start_daemon() { # STATE_DIR
  local state=$1 launcher
  [[ -d $state ]] || fail "no such folder: $state"
  mkdir -p "$state/bin"
  ln -sf "$CLIENT" "$state/bin/docker"
  export DOCKER_HOST="unix://$state/docker.sock"
  # overlay2 named: a file system without it fails here, instead of a silent fallback to
  # vfs, which copies every layer in full. The containerd namespace keeps this engine's
  # containers apart should it attach to a system containerd.
  setsid "$DAEMON" --host "$DOCKER_HOST" --pidfile "$state/dockerd.pid" \
    --exec-root "$state/exec" --data-root "$state/data" --storage-driver overlay2 \
    --containerd-namespace "${state##*/}" --containerd-plugins-namespace "${state##*/}-plugins" \
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=false >"$state/dockerd.log" 2>&1 </dev/null &
  launcher=$!
  echo "$launcher" >"$state/dockerd.launcher.pid"
  for _ in $(seq 1 300); do
    if "$CLIENT" version >/dev/null 2>&1; then
      echo "$DOCKER_HOST"
      return 0
    fi
    if ! kill -0 "$launcher" 2>/dev/null; then
      fail "the Docker daemon could not start: $(grep -v '^$' "$state/dockerd.log" | tail -n 1)"
    fi
    sleep 0.2
  done
  fail "the Docker daemon did not answer within 60 s (log: $state/dockerd.log)"
}

stop_daemon() { # STATE_DIR
  local state=$1 pid=""
  [[ -d $state ]] || return 0
  export DOCKER_HOST="unix://$state/docker.sock"
  if [[ -f $state/dockerd.pid ]]; then
    pid=$(<"$state/dockerd.pid")
  elif [[ -f $state/dockerd.launcher.pid ]]; then
    pid=$(<"$state/dockerd.launcher.pid")
  fi
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    local containers
    containers=$("$CLIENT" ps -aq 2>/dev/null || true)
    if [[ -n $containers ]]; then
      # shellcheck disable=SC2086  # one id per word
      "$CLIENT" rm -f $containers >/dev/null 2>&1 || true
    fi
    "$CLIENT" system prune -af 2>/dev/null | grep -i 'reclaimed' || true
    "$CLIENT" builder prune -af >/dev/null 2>&1 || true
    kill "$pid"
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && fail "dockerd (pid $pid) did not stop within 30 s; $state kept"
  fi
  # dockerd leaves its network namespace file bind-mounted under the exec-root.
  findmnt -rn -o TARGET | grep -F "$state/" | sort -r | xargs -r umount || true
  rm -rf --one-file-system "$state"
}

case ${1:-} in
  install) install_packages ;;
  start) start_daemon "${2:?usage: $PROG start STATE_DIR}" ;;
  stop) stop_daemon "${2:?usage: $PROG stop STATE_DIR}" ;;
  *) fail "usage: $PROG install | start STATE_DIR | stop STATE_DIR" ;;
esac
