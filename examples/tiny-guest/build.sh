#!/usr/bin/env bash
# Build the tiny Linux guest that reimage's end-to-end tests and demo boot
# under QEMU, from Debian packages only (no downloads besides apt-get).
#
#   examples/tiny-guest/build.sh [OUTDIR]
#
# OUTDIR defaults to ${REIMAGE_GUEST_DIR:-/var/cache/reimage/tiny-guest}.
# On success the last line on stdout is OUTDIR, so callers can do
# `dir=$(examples/tiny-guest/build.sh | tail -n1)`.
#
# Outputs (see README.md next to this script):
#   vmlinuz             Debian's kernel (the one linux-image-amd64 depends on)
#   vmlinux             the same kernel decompressed, for a faster boot (PVH)
#   initramfs.cpio.gz   busybox + dropbear + a few modules + /init
#   base.qcow2          64 MiB ext4 image the guest mounts at /var/lib
#   id_ed25519{,.pub}   test key pair, authorized for root in the guest
#   README              what each file is
#   stamp               hash of the inputs; a matching stamp skips the build
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
outdir=${1:-${REIMAGE_GUEST_DIR:-/var/cache/reimage/tiny-guest}}

# Files of this directory that end up in the guest; they are part of the stamp.
guest_files=(init tiny-sshd tiny-shutdown)
outputs=(vmlinuz initramfs.cpio.gz base.qcow2 id_ed25519 id_ed25519.pub README)
# Modules the guest loads: virtio disk and NIC (the QEMU default), e1000 as
# the fallback NIC, virtio_rng so host keys need not wait for entropy when
# QEMU has -device virtio-rng-pci, ext4 for /var/lib. crc32c_generic is
# ext4's soft dependency ("crypto-crc32c"), which modules.dep does not list.
# init loads the same list.
modules=(virtio_pci virtio_blk virtio_net e1000 virtio_rng crc32c_generic ext4)
disk_size=64M

log() { printf 'tiny-guest build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=../lib/kernel.sh
. "$here/../lib/kernel.sh"

pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# apt-get runs only when something is missing, and `apt-get update` at most
# once per build, so a warm machine never touches the network.
apt_updated=
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})"
    log "installing missing packages: ${missing[*]}"
    if [[ -z $apt_updated ]]; then
        apt-get update -qq >&2
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# busybox-static, not busybox: /init and the shell then depend on no copied
# library, so a guest whose dropbear libraries are off still boots to a shell.
ensure_packages linux-image-amd64 busybox-static dropbear-bin qemu-utils \
    e2fsprogs cpio openssh-client kmod gzip

# The kernel is the one the linux-image-amd64 metapackage points at, not the
# running kernel: in containers and CI `uname -r` is the host's kernel, whose
# modules are not installed here.
kpkg=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | sed 's/[,|]/\n/g' |
    sed -n 's/^ *\(linux-image-[^ ]*\).*/\1/p' | head -n1)
[[ -n $kpkg ]] || die "cannot tell which kernel linux-image-amd64 depends on"
kver=${kpkg#linux-image-}
kpkg_version=$(dpkg-query -W -f='${Version}' "$kpkg")
vmlinuz=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[[ -r $vmlinuz ]] || die "$vmlinuz is missing or unreadable (is $kpkg installed?)"
[[ -r $moddir/modules.dep ]] || die "$moddir/modules.dep is missing; run depmod $kver"
# QEMU boots an uncompressed ELF kernel through its PVH entry point, which
# skips the in-guest decompression of vmlinuz (about 4 s of a 10 s boot
# under TCG). Only kernels built with CONFIG_PVH have that entry point.
if grep -q '^CONFIG_PVH=y' "/boot/config-$kver" 2>/dev/null; then
    outputs+=(vmlinux)
else
    log "note: $kpkg lacks CONFIG_PVH, not extracting vmlinux (boot vmlinuz instead)"
fi

# The stamp covers everything that changes the outputs: this script, the
# files copied into the guest, and the versions of the packages copied from.
stamp=$(
    {
        cat "${BASH_SOURCE[0]}" "$here/../lib/kernel.sh"
        for f in "${guest_files[@]}"; do cat "$here/$f"; done
        echo "kernel $kver $kpkg_version"
        dpkg-query -W -f='${Package} ${Version}\n' busybox-static dropbear-bin
    } | sha256sum | cut -d' ' -f1
)

have_all_outputs() {
    local f
    for f in "${outputs[@]}"; do [[ -s $outdir/$f ]] || return 1; done
}

if have_all_outputs && [[ $(cat "$outdir/stamp" 2>/dev/null) == "$stamp" ]]; then
    printf '%s\n' "$outdir"
    exit 0
fi

mkdir -p "$outdir"
# Tests may call this script concurrently; one builds, the others wait and
# then find a matching stamp.
exec 9>"$outdir/.lock"
flock 9
if have_all_outputs && [[ $(cat "$outdir/stamp" 2>/dev/null) == "$stamp" ]]; then
    printf '%s\n' "$outdir"
    exit 0
fi

log "building for kernel $kver ($kpkg $kpkg_version) into $outdir"
# Build next to the outputs so the final mv is a rename on one filesystem.
work=$(mktemp -d "$outdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"

# --- test key pair --------------------------------------------------------
# Keep an existing key pair across rebuilds so a kernel update does not
# invalidate keys that users copied elsewhere; generate one otherwise.
if [[ -s $outdir/id_ed25519 && -s $outdir/id_ed25519.pub ]]; then
    cp "$outdir/id_ed25519" "$outdir/id_ed25519.pub" "$work/"
else
    ssh-keygen -q -t ed25519 -N '' -C 'reimage tiny-guest test key' -f "$work/id_ed25519"
fi
chmod 600 "$work/id_ed25519"

# --- initramfs: directory skeleton and busybox ----------------------------
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,var/lib,var/log,root/.ssh}
chmod 1777 "$root/tmp"
chmod 700 "$root/root" "$root/root/.ssh"
ln -s /run "$root/var/run"
cp /bin/busybox "$root/bin/busybox"
# The links `busybox --install -s` would make at boot, made here instead so
# the image is complete and /init can rely on them: --install with a DIR
# argument flattens everything into DIR, --list-full keeps bin/ and sbin/.
while read -r applet; do
    [[ -e $root/$applet || -L $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
done < <(/bin/busybox --list-full)
[[ -L $root/bin/sh && -L $root/sbin/init ]] || die "busybox --install did not create /bin/sh and /sbin/init"

# --- dropbear and the shared libraries it needs ---------------------------
copy_with_libs() {
    local bin=$1 lib
    install -D -m 755 "$bin" "$root$bin"
    # ldd lists "name => /path (addr)" for libraries and "/path (addr)" for
    # the dynamic loader; copy both at the same paths (dereferenced: the
    # guest has no merged /usr, so symlinked directories would dangle).
    while read -r lib; do
        [[ -e $root$lib ]] || install -D -m 755 "$(readlink -f "$lib")" "$root$lib"
    done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}
copy_with_libs /usr/sbin/dropbear
copy_with_libs /usr/bin/dropbearkey

# --- kernel modules -------------------------------------------------------
# modules.dep lines read "kernel/a.ko[.xz]: kernel/b.ko kernel/c.ko"; walk
# the dependencies of the modules we want and copy each one once.
declare -A mod_path=() mod_deps=() mod_seen=()
mod_order=()
while IFS=: read -r path deps; do
    name=${path##*/}
    name=${name%%.ko*}
    mod_path[${name//-/_}]=$path
    mod_deps[${name//-/_}]=$deps
done <"$moddir/modules.dep"

add_module() {
    local name=${1//-/_} dep
    [[ -n ${mod_seen[$name]:-} ]] && return 0
    mod_seen[$name]=1
    if [[ -z ${mod_path[$name]:-} ]]; then
        # Built into this kernel: nothing to copy, modprobe knows it from
        # modules.builtin.
        grep -q "/${1}.ko\$\|/${name}.ko\$" "$moddir/modules.builtin" ||
            die "module $1 is neither in $moddir/modules.dep nor built in"
        return 0
    fi
    for dep in ${mod_deps[$name]}; do
        dep=${dep##*/}
        add_module "${dep%%.ko*}"
    done
    local src=$moddir/${mod_path[$name]} dst=$root/lib/modules/$kver/${mod_path[$name]%.ko*}.ko
    mod_order+=("${mod_path[$name]%.ko*}.ko")
    mkdir -p "$(dirname "$dst")"
    # busybox insmod only reads plain .ko files, so decompress at build time.
    case $src in
    *.ko) cp "$src" "$dst" ;;
    *.ko.xz) command -v xz >/dev/null || ensure_packages xz-utils; xz -dc "$src" >"$dst" ;;
    *.ko.zst) command -v zstd >/dev/null || ensure_packages zstd; zstd -qdc "$src" >"$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$dst" ;;
    *) die "unknown module format: $src" ;;
    esac
}
for m in "${modules[@]}"; do add_module "$m"; done
# Let depmod write modules.dep (and .alias, so the kernel's request_module()
# finds e.g. crypto-crc32c) for exactly the modules copied above.
# modules.builtin lets `modprobe X` succeed for built-in X; modules.order
# lists what we copied, in load order.
cp "$moddir/modules.builtin" "$moddir/modules.builtin.modinfo" "$root/lib/modules/$kver/"
printf '%s\n' "${mod_order[@]}" >"$root/lib/modules/$kver/modules.order"
depmod -b "$root" "$kver"

# --- configuration ----------------------------------------------------------
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
EOF
# "*": no password can match, key logins only (dropbear runs with -s too).
printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
chmod 600 "$root/etc/shadow"
printf '/bin/sh\n/bin/ash\n' >"$root/etc/shells"
cat >"$root/etc/os-release" <<'EOF'
ID=tiny
NAME="reimage tiny guest"
PRETTY_NAME="reimage tiny guest (busybox + dropbear)"
EOF
printf 'tiny-linux\n' >"$root/etc/reimage-image"
printf 'tiny\n' >"$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
# QEMU user networking's built-in DNS forwarder.
printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
install -m 600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"

install -m 755 "$here/init" "$root/init"
install -m 755 "$here/tiny-sshd" "$root/sbin/tiny-sshd"
install -m 755 "$here/tiny-shutdown" "$root/sbin/tiny-shutdown"

# No device nodes in the archive: building it then needs no mknod (works
# unprivileged); /init mounts devtmpfs before it opens the console.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9n >"$work/initramfs.cpio.gz"

# --- /var/lib disk ---------------------------------------------------------
# The guest mounts this at /var/lib; loads put a fresh qcow2 overlay on it,
# so every load starts from this content (and gets new SSH host keys).
varlib=$work/varlib
mkdir -p "$varlib/dropbear"
chmod 700 "$varlib/dropbear"
truncate -s "$disk_size" "$work/base.raw"
mkfs.ext4 -q -F -L tiny-varlib -E root_owner=0:0 -d "$varlib" "$work/base.raw"
qemu-img convert -f raw -O qcow2 "$work/base.raw" "$work/base.qcow2"
rm -f "$work/base.raw"

cp "$vmlinuz" "$work/vmlinuz"

if [[ " ${outputs[*]} " == *" vmlinux "* ]]; then
    extract_vmlinux "$vmlinuz" "$work/vmlinux" || die "could not extract an ELF kernel from $vmlinuz"
fi

cat >"$work/README" <<EOF
reimage tiny guest, built by examples/tiny-guest/build.sh for kernel $kver ($kpkg $kpkg_version)
vmlinuz            Debian kernel $vmlinuz
vmlinux            the same kernel uncompressed (ELF, PVH entry): boots ~4 s faster under TCG
initramfs.cpio.gz  busybox-static, dropbear, modules (${modules[*]}), /init
base.qcow2         $disk_size ext4 disk mounted at /var/lib (use a qcow2 overlay per boot)
id_ed25519         private test key, no passphrase; logs in as root
id_ed25519.pub     its public key (the guest's /root/.ssh/authorized_keys)
Kernel command line: console=ttyS0 reimage.attempt=N reimage.nossh=LIST|all reimage.sshdelay=SECONDS reimage.ip=ADDR/PREFIX reimage.gw=ADDR reimage.hangreboot
EOF

# Publish: outputs first, the stamp last, so an interrupted build never
# leaves a stamp that vouches for partial outputs.
rm -f "$outdir/stamp"
for f in "${outputs[@]}"; do mv -f "$work/$f" "$outdir/$f"; done
printf '%s\n' "$stamp" >"$outdir/stamp"
log "initramfs $(du -h "$outdir/initramfs.cpio.gz" | cut -f1), base.qcow2 $(du -h "$outdir/base.qcow2" | cut -f1)"
printf '%s\n' "$outdir"
