#!/usr/bin/env bash
# Make the tiny guest (examples/tiny-guest) a Slurm compute node: its
# initramfs plus slurmd, slurmstepd, munged, the Slurm plugins they can load
# and their libraries, all copied from this host's Debian packages (slurmd,
# munge), so the guest's slurmd is the same version as the host's
# slurmctld. Nothing is started and no key is in it: the load's post-load
# script brings the MUNGE key and starts munged and slurmd (see
# tests/integration/slurm.rs).
#
#   examples/slurm/tiny-node.sh [OUTDIR]
#
# OUTDIR defaults to ${REIMAGE_TINY_SLURM_DIR:-/var/cache/reimage/tiny-slurm};
# the tiny guest is built (or found) in ${REIMAGE_GUEST_DIR:-/var/cache/reimage/tiny-guest}.
# The last line on stdout is OUTDIR, which holds:
#   initrd.cpio   the tiny guest's initramfs with the Slurm files, one
#                 uncompressed cpio archive (boot it with the tiny guest's
#                 vmlinux and base.qcow2)
#   stamp         hash of the inputs; a matching stamp skips the build
# Plugins that need libraries beyond those of slurmd, slurmstepd and munged
# (HDF5, IPMI, Lua, curl, ...) are left out: a node whose slurm.conf names
# one of them cannot use this initrd.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
outdir=${1:-${REIMAGE_TINY_SLURM_DIR:-/var/cache/reimage/tiny-slurm}}
tiny=${REIMAGE_GUEST_DIR:-/var/cache/reimage/tiny-guest}
plugins=/usr/lib/x86_64-linux-gnu/slurm-wlm

log() { printf 'tiny-node build: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# shellcheck source=../lib/apt.sh
. "$here/../lib/apt.sh"
apt_install slurmd munge cpio
tiny=$(bash "$here/../tiny-guest/build.sh" "$tiny" | tail -n 1)
[[ -s $tiny/initramfs.cpio.gz && -s $tiny/stamp ]] || die "no tiny guest in $tiny"

stamp=$(
    {
        cat "${BASH_SOURCE[0]}" "$tiny/stamp"
        dpkg-query -W -f='${Package} ${Version}\n' slurmd slurm-wlm-basic-plugins munge libmunge2
    } | sha256sum | cut -d' ' -f1
)
fresh() { [[ -s $outdir/initrd.cpio && $(cat "$outdir/stamp" 2>/dev/null) == "$stamp" ]]; }
if fresh; then
    printf '%s\n' "$outdir"
    exit 0
fi
mkdir -p "$outdir"
exec 9>"$outdir/.lock"
flock 9
if fresh; then
    printf '%s\n' "$outdir"
    exit 0
fi

work=$(mktemp -d "$outdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"
(cd "$root" && gzip -dc "$tiny/initramfs.cpio.gz" | cpio -idm --quiet --no-absolute-filenames) ||
    die "cannot unpack $tiny/initramfs.cpio.gz"

# copy FILE [DEST]: FILE (symlinks followed) at DEST in the guest, with every
# library it loads at the path ldd names.
copy() {
    local src=$1 dst=${2:-$1} lib
    install -D -m 755 "$(readlink -f "$src")" "$root$dst"
    while read -r lib; do
        [[ -e $root$lib ]] || install -D -m 755 "$(readlink -f "$lib")" "$root$lib"
    done < <(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}
libs_of() { ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u; }

# slurmd runs slurmstepd from /usr/sbin, where Debian's alternatives put it.
copy /usr/sbin/slurmd
copy /usr/sbin/slurmstepd
copy /usr/sbin/munged
copy /usr/bin/munge
core=$(for b in /usr/sbin/slurmd /usr/sbin/slurmstepd /usr/sbin/munged; do libs_of "$b"; done | sort -u)
kept=0 skipped=()
for p in "$plugins"/*.so; do
    extra=$(libs_of "$p" | grep -vxF "$core" || true)
    if [[ -n $extra ]]; then
        skipped+=("${p##*/}")
        continue
    fi
    install -D -m 644 "$p" "$root$p"
    kept=$((kept + 1))
done
log "plugins: $kept copied, ${#skipped[@]} left out (they need more libraries): ${skipped[*]}"
# What slurmd and munged look for at start; the post-load script makes the
# rest (/run/munge, the spool directory).
mkdir -p "$root/etc/slurm" "$root/etc/munge" "$root/var/spool/slurmd" "$root/var/log"
chmod 700 "$root/etc/munge"

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) >"$work/initrd.cpio"
rm -f "$outdir/stamp"
mv -f "$work/initrd.cpio" "$outdir/initrd.cpio"
printf '%s\n' "$stamp" >"$outdir/stamp"
log "done: $(du -h "$outdir/initrd.cpio" | cut -f1) initrd for the tiny guest in $tiny"
printf '%s\n' "$outdir"
