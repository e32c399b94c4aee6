#!/usr/bin/env bash
# The README's performance numbers, with one command on a fresh Debian
# machine (as root):
#
#   bash examples/bench/run.sh
#
# Installs what reimage is compared against (netcat-openbsd and
# openssh-server from Debian; ansible-core from PyPI into a venv, with
# matplotlib for the plot), builds reimage (release) and the tiny QEMU guest
# (cached), runs examples/bench_ready.rs, and writes into examples/bench/:
#   results.json  every measurement
#   table.md      the tables the README shows
#   lag.png       the lag distributions per tool
# TRIALS (20), CONCURRENT (200) and COST_SECS (60) change the sizes;
# NO_GUEST=1 leaves out the QEMU --reuse timing.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
OUT=${REIMAGE_BENCH_OUT:-$repo/examples/bench}
VENV=${REIMAGE_BENCH_VENV:-/var/cache/reimage/bench-venv}
GUEST=${REIMAGE_GUEST_DIR:-/var/cache/reimage/tiny-guest}

. "$repo/examples/lib/apt.sh"
apt_install netcat-openbsd openssh-server openssh-client python3 python3-venv \
  libssl-dev pkg-config zlib1g-dev
if [ -z "${NO_GUEST:-}" ]; then
  apt_install qemu-system-x86 qemu-utils linux-image-amd64 busybox-static dropbear-bin \
    e2fsprogs cpio
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "bench: cargo is missing: install a Rust toolchain (https://rustup.rs), then run this again" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/ansible" ] || [ ! -x "$VENV/bin/python" ]; then
  echo "bench: installing ansible-core and matplotlib into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q ansible-core matplotlib
fi
echo "bench: $("$VENV/bin/ansible" --version | head -n 1)"

echo "bench: building reimage and the benchmark (release)"
cargo build --release --quiet
cargo build --release --quiet --example bench_ready
guest=()
if [ -z "${NO_GUEST:-}" ]; then
  echo "bench: building the tiny guest in $GUEST (cached)"
  bash examples/tiny-guest/build.sh "$GUEST" >/dev/null
  guest=(--guest "$GUEST")
fi

# 200 concurrent runs and their targets need more than 1024 descriptors.
ulimit -n 8192 2>/dev/null || true
mkdir -p "$OUT"
echo "bench: running; progress on stderr, tables at the end (about 15 minutes)"
"$repo/target/release/examples/bench_ready" \
  --trials "${TRIALS:-20}" --concurrent "${CONCURRENT:-200}" --cost-secs "${COST_SECS:-60}" \
  --ansible "$VENV/bin" "${guest[@]}" --out "$OUT"
"$VENV/bin/python" examples/bench/plot.py "$OUT/results.json" "$OUT/lag.png"
echo "bench: wrote $OUT/results.json, $OUT/table.md, $OUT/lag.png"
