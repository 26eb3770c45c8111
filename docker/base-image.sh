#!/usr/bin/env bash
# Make a minimal Debian 12 (bookworm) base image from this machine's own Debian mirror and
# load it into the engine DOCKER_HOST points at; print its name. It stands in for the base
# images (ubuntu, nvidia/cuda) where only Debian's archive and PyPI can be reached.
#   docker/base-image.sh            (as root, with debootstrap; DOCKER_HOST set)
set -euo pipefail

readonly PROG=base-image.sh
readonly SUITE=bookworm
readonly NAME=local/debian:$SUITE
readonly CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
readonly LOCAL_CAS=/usr/local/share/ca-certificates

fail() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

# The URI of the machine's apt source for SUITE (release or -security), as apt itself reads
# sources.list and sources.list.d (one-line and deb822 files alike).
mirror_of() { # RELEASE
  # shellcheck disable=SC2016  # $(REPO_URI) is apt's template, not a shell expansion
  apt-get indextargets --format '$(REPO_URI)' "Release: $1" 'Identifier: Packages' | head -n 1
}

mirror=$(mirror_of "$SUITE")
[[ -n $mirror ]] || fail "this machine's apt sources have no Debian '$SUITE' mirror"
security=$(mirror_of "$SUITE-security")

rootfs=$(mktemp -d /var/tmp/base-image.XXXXXX)
trap 'rm -rf --one-file-system "$rootfs" "$rootfs.log"' EXIT
debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || fail "debootstrap failed: $(tail -n 1 "$rootfs.log")"

{
  echo "deb $mirror $SUITE main"
  echo "deb $mirror $SUITE-updates main"
  if [[ -n $security ]]; then echo "deb $security $SUITE-security main"; fi
} >"$rootfs/etc/apt/sources.list"

# This machine's certificate authorities, for networks that re-sign TLS: the bundle, used
# as it is until an image installs the ca-certificates package, and the local certificates
# it was made from, which that package's update-ca-certificates adds back. pip reads no
# SSL_CERT_FILE, so pip.conf names the bundle.
mkdir -p "$rootfs${CA_BUNDLE%/*}"
cp "$CA_BUNDLE" "$rootfs$CA_BUNDLE"
if [[ -d $LOCAL_CAS ]]; then
  mkdir -p "$rootfs$LOCAL_CAS"
  cp -a "$LOCAL_CAS/." "$rootfs$LOCAL_CAS/"
fi
printf '[global]\ncert = %s\n' "$CA_BUNDLE" >"$rootfs/etc/pip.conf"

rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
tar --numeric-owner -C "$rootfs" -c . \
  | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$NAME" >/dev/null
echo "$NAME"
