#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine, as root: installs what is needed, builds
# berth, starts berthd on the default socket, makes a busybox image from Debian's
# busybox-static (no registry needed) and lists it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --release --locked
install -m 0755 target/release/berthd target/release/berth target/release/berth-shim target/release/berth-runtime /usr/local/bin/
if ! berth version >/dev/null 2>&1; then
  mkdir -p /var/log
  nohup berthd >/var/log/berthd.log 2>&1 &
  for _ in $(seq 100); do berth version >/dev/null 2>&1 && break; sleep 0.1; done
fi
work=$(mktemp -d)
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh true echo cat ls sleep id env; do ln -sf busybox "$work/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/rootfs/etc/passwd"
tar -C "$work/rootfs" -cf "$work/busybox.tar" .
berth import -c 'CMD ["/bin/sh"]' "$work/busybox.tar" busybox:latest
rm -rf "$work"
berth images
