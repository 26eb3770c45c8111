#!/usr/bin/env bash
# Installs Debian's headless JDK, which `make venv` needs when javac is missing: serve's
# frontend extension is compiled with javac, and multi-model-server runs on its JRE.
set -euo pipefail

fail() {
  printf 'install-jdk.sh: %s\n' "$*" >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 \
  || fail "needs a JDK 17 or later (javac on PATH), and this machine has no apt-get"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || fail "needs root (or sudo) to install default-jdk-headless"
  sudo=(sudo)
fi
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  default-jdk-headless
command -v javac >/dev/null 2>&1 || fail "default-jdk-headless is installed but javac is not on PATH"
