#!/usr/bin/env bash
# The README's main command: on a fresh Debian machine, as root, load a real
# VM with reimage's embedded QEMU default and bring its Linux to ready over
# SSH, attempt by attempt, in front of you.
#
#   bash examples/demo.sh            # first run builds; later runs reload
#   bash examples/demo.sh --debian   # the same on a real Debian guest
#
# Installs the Debian packages it needs, builds reimage and the tiny guest
# (or, with --debian, the Debian guest: systemd, OpenSSH, nftables) if
# missing, writes a config for computer `demo-vm`, and runs
# `reimage provision demo-vm --image tiny-linux` (or `--image debian`). A
# second run reloads the VM from a fresh overlay. Stop the VM with:
# kill "$(cat $DEMO/state/qemu/demo-vm/qemu.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
guest=tiny
case "${1:-}" in
"") ;;
--debian) guest=debian ;;
*)
  echo "usage: bash examples/demo.sh [--debian]" >&2
  exit 64
  ;;
esac
DEMO=${REIMAGE_DEMO_DIR:-/var/lib/reimage-demo}
GUEST=${REIMAGE_GUEST_DIR:-/var/cache/reimage/tiny-guest}
DEBIAN=${REIMAGE_DEBIAN_DIR:-/var/cache/reimage/debian-guest}
PORT=${REIMAGE_DEMO_PORT:-2222}

. "$repo/examples/lib/apt.sh"
apt_install qemu-system-x86 qemu-utils linux-image-amd64 busybox-static dropbear-bin \
  e2fsprogs cpio openssh-client libssl-dev pkg-config zlib1g-dev
if [ $guest = debian ]; then
  apt_install debootstrap debian-archive-keyring xz-utils zstd
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "demo: cargo is missing: install a Rust toolchain (https://rustup.rs), then run this again" >&2
  exit 1
fi

echo "demo: building reimage (release)"
cargo build --release --quiet
if [ $guest = debian ]; then
  echo "demo: building the Debian guest in $DEBIAN (cached; the first build takes a few minutes)"
  bash examples/debian-guest/build.sh "$DEBIAN" >/dev/null
else
  echo "demo: building the tiny guest in $GUEST (cached)"
  bash examples/tiny-guest/build.sh "$GUEST" >/dev/null
fi

mkdir -p "$DEMO"
cat > "$DEMO/reimage.toml" <<TOML
# Written by examples/demo.sh.
state_dir = "$DEMO/state"
max_attempts = 3

# The embedded default provisioner "qemu" needs no table: a local VM with a
# fresh copy-on-write overlay per load, SSH forwarded to 127.0.0.1:$PORT.

[os.tiny-linux]
family = "linux"
key_file = "$GUEST/id_ed25519"
connect_timeout = "3s"
timeouts = { port = "2m", banner = "2m", login = "1m" }
# The tiny guest's busybox has no chpasswd, so it keeps its (key-only) root;
# the Debian guest (examples/debian-guest) gets a fresh root password.
fresh_password = false

[images.tiny-linux]
os = "tiny-linux"
provisioner = "qemu"
virtual = true
source = "$GUEST/base.qcow2"
kernel = "$GUEST/vmlinux"
initrd = "$GUEST/initramfs.cpio.gz"
cmdline = "console=ttyS0 quiet reimage.attempt={attempt}"
image_check = { command = ["cat", "/etc/reimage-image"], expect = "^tiny-linux" }

# A real Debian (examples/debian-guest): the built-in linux profile with the
# guest's key and timeouts for a boot under TCG.
[os.debian]
family = "linux"
key_file = "$DEBIAN/id_ed25519"
connect_timeout = "10s"
timeouts = { port = "5m", banner = "5m", login = "3m" }

[images.debian]
os = "debian"
provisioner = "qemu"
virtual = true
source = "$DEBIAN/base.qcow2"
kernel = "$DEBIAN/vmlinux"
initrd = "$DEBIAN/initrd.img"
cmdline = "root=/dev/vda rw console=ttyS0 quiet"
image_check = { command = ["cat", "/etc/reimage-image"], expect = "^debian-" }

[computers.demo-vm]
address = "127.0.0.1"
port = $PORT
TOML

if [ $guest = debian ]; then image=debian key=$DEBIAN/id_ed25519; else image=tiny-linux key=$GUEST/id_ed25519; fi
echo "demo: config $DEMO/reimage.toml"
"$repo/target/release/reimage" --config "$DEMO/reimage.toml" check demo-vm --image $image
echo
set +e
"$repo/target/release/reimage" --config "$DEMO/reimage.toml" provision demo-vm --image $image --reservation demo
rc=$?
set -e
echo
log="$DEMO/state/computers/demo-vm/events.jsonl"
# QEMU uses KVM when /dev/kvm opens read-write and the CPU shows vmx/svm,
# else TCG (software emulation, several times slower to boot).
accel=$(grep -o '"message":"accelerator: [^"]*"' "$log" 2>/dev/null | tail -n 1 | sed 's/.*accelerator: //; s/"$//')
echo "demo: QEMU accelerator used: ${accel:-unknown (no load ran)}"
echo "demo: reimage exited $rc; event log: $log"
if [ $rc -eq 0 ]; then
  echo "demo: log in to the VM with: ssh -i $key -p $PORT -o UserKnownHostsFile=$DEMO/state/known_hosts.ssh -o StrictHostKeyChecking=accept-new root@127.0.0.1"
fi
exit $rc
