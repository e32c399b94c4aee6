#!/usr/bin/env bash
# Build a minimal Debian guest for reimage's end-to-end tests and demo: a real
# distribution with systemd, OpenSSH, nftables and systemd-timesyncd, booted
# by QEMU with its own kernel and initrd (direct kernel boot, no bootloader).
#
#   examples/debian-guest/build.sh [OUTDIR]
#
# Needs root (debootstrap). OUTDIR defaults to
# ${REIMAGE_DEBIAN_DIR:-/var/cache/reimage/debian-guest}; the last line on
# stdout is OUTDIR. The suite and mirror are the host's (from /etc/os-release
# and its apt sources); REIMAGE_DEBIAN_SUITE and REIMAGE_DEBIAN_MIRROR
# override them.
#
# Outputs (see README.md next to this script):
#   vmlinuz             the guest's kernel (its /boot/vmlinuz)
#   vmlinux             the same kernel decompressed, for a faster boot (PVH)
#   initrd.img          the guest's initramfs-tools initrd (virtio modules)
#   base.qcow2          the root file system (ext4 on the whole disk, /dev/vda)
#   id_ed25519{,.pub}   test key pair, authorized for root in the guest
#   README              what each file is
#   stamp               hash of the inputs; a matching stamp skips the build
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
outdir=${1:-${REIMAGE_DEBIAN_DIR:-/var/cache/reimage/debian-guest}}
outputs=(vmlinuz vmlinux initrd.img base.qcow2 id_ed25519 id_ed25519.pub README)
# What makes it a small real server: systemd as init with dbus (hostnamectl
# and timedatectl talk to their daemons over it), OpenSSH, an nftables
# firewall, systemd-timesyncd, systemd-networkd (in systemd) for DHCP, and
# the distribution's kernel with initramfs-tools. netbase: /etc/protocols,
# which nft needs to read protocol names. slurmd and munge: the guest can be
# a Slurm compute node (tests/integration/slurm.rs); both stay disabled and
# the image holds no MUNGE key (see below). sudo: what `reimage grant
# --admin` gives a user (tests/integration/grant.rs).
packages=(systemd systemd-sysv dbus udev kmod openssh-server nftables
    systemd-timesyncd iproute2 netbase procps linux-image-amd64 initramfs-tools
    slurmd munge sudo)
disk_size=1536M

log() { printf 'debian-guest build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=../lib/apt.sh
. "$here/../lib/apt.sh"
# shellcheck source=../lib/kernel.sh
. "$here/../lib/kernel.sh"

suite=${REIMAGE_DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
[[ -n $suite ]] || die "cannot tell the host's Debian suite from /etc/os-release; set REIMAGE_DEBIAN_SUITE"

# host_mirror: the first URI in the host's apt sources that serves $suite
# (one-line .list entries and deb822 .sources stanzas alike).
host_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == s) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" }
            { uri = ""; ok = 0
              for (i = 1; i <= NF; i++) {
                if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
                if ($i ~ /^Suites:/) { n = split($i, b, /[ \t]+/); for (j = 2; j <= n; j++) if (b[j] == s) ok = 1 }
              }
              if (ok && uri != "") { print uri; exit } }' "$f"
    done
}
mirror=${REIMAGE_DEBIAN_MIRROR:-$(host_mirror | head -n1)}
[[ -n $mirror ]] || die "no apt source for $suite in /etc/apt/sources.list*; set REIMAGE_DEBIAN_MIRROR"

# The stamp covers what changes the outputs: this script, the shared kernel
# helper, the suite and the mirror. Package versions are what the mirror
# serves at build time; delete the stamp to take newer ones.
stamp=$(
    {
        cat "${BASH_SOURCE[0]}" "$here/../lib/kernel.sh"
        echo "suite $suite mirror $mirror"
    } | sha256sum | cut -d' ' -f1
)

have_all_outputs() {
    local f
    for f in "${outputs[@]}"; do [[ -s $outdir/$f ]] || return 1; done
}
fresh() { have_all_outputs && [[ $(cat "$outdir/stamp" 2>/dev/null) == "$stamp" ]]; }

if fresh; then
    printf '%s\n' "$outdir"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "building needs root (debootstrap); run it as root, or copy a built $outdir here"
apt_install debootstrap debian-archive-keyring qemu-utils e2fsprogs openssh-client xz-utils zstd

mkdir -p "$outdir"
# Tests may call this script concurrently; one builds, the others wait and
# then find a matching stamp.
exec 9>"$outdir/.lock"
flock 9
if fresh; then
    printf '%s\n' "$outdir"
    exit 0
fi

started=$(date +%s)
log "building Debian $suite from $mirror into $outdir"
work=$(mktemp -d "$outdir/.build.XXXXXX")
root=$work/root
# debootstrap leaves /proc and /sys mounted in the chroot when it fails.
cleanup() {
    local m
    for m in proc sys dev/pts dev; do umount "$root/$m" 2>/dev/null || true; done
    # Never into a mount the chroot still holds (the host's /proc or /sys).
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# --- test key pair -----------------------------------------------------------
# Kept across rebuilds so a rebuild does not invalidate copies of the key.
if [[ -s $outdir/id_ed25519 && -s $outdir/id_ed25519.pub ]]; then
    cp "$outdir/id_ed25519" "$outdir/id_ed25519.pub" "$work/"
else
    ssh-keygen -q -t ed25519 -N '' -C 'reimage debian-guest test key' -f "$work/id_ed25519"
fi
chmod 600 "$work/id_ed25519"

# --- the root file system ----------------------------------------------------
# Documentation, manual pages and translations never reach the disk.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/01-reimage-small" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
include=$(
    IFS=,
    echo "${packages[*]}"
)
# Downloaded packages stay in OUTDIR/debs, so a rebuild fetches only what
# changed on the mirror.
mkdir -p "$outdir/debs"
debootstrap --variant=minbase --include="$include" --components=main \
    --cache-dir="$(cd "$outdir/debs" && pwd)" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    {
        tail -n 30 "$work/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    }
log "debootstrap done after $(($(date +%s) - started)) s"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

modules=("$root"/lib/modules/*/)
kver=$(basename "${modules[0]}")
[[ -n $kver && -e $root/boot/vmlinuz-$kver ]] || die "no kernel in the guest's /boot"

# The disk is ext4 on the whole of /dev/vda (the qemu provisioner attaches
# it as a virtio disk); no partition table, no bootloader.
cat >"$root/etc/fstab" <<'EOF'
/dev/vda / ext4 rw,errors=remount-ro 0 1
EOF
printf 'debian\n' >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 debian\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf 'debian-bookworm\n' >"$root/etc/reimage-image"

# A fresh machine id on first boot: an empty file makes systemd generate one
# (and run its first-boot units), so no two loads share the image's.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# Root logs in with the test key only: no password, no password logins.
in_root usermod -p '*' root
install -d -m 700 "$root/root/.ssh"
install -m 600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
cat >"$root/etc/ssh/sshd_config.d/reimage.conf" <<'EOF'
# reimage debian-guest: keys only.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
EOF

# Host keys are made on the first boot of each load, so every load has its
# own (reimage's replace-after-load policy expects that). Only an Ed25519
# key: an RSA key takes some 20 s to generate under TCG.
rm -f "$root"/etc/ssh/ssh_host_*
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\n' >>"$root/etc/ssh/sshd_config.d/reimage.conf"
cat >"$root/etc/systemd/system/reimage-ssh-host-key.service" <<'EOF'
[Unit]
Description=Generate the SSH host key of this load
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -C "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
RequiredBy=ssh.service
EOF

# Networking for QEMU's user mode: DHCP on the PCI NIC (enp0s1 on q35)
# with systemd-networkd, which leaves other links (a test's veth) alone;
# QEMU's DNS forwarder is 10.0.2.3.
cat >"$root/etc/systemd/network/10-reimage-vm.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd-wait-online.service"
printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"

# Time: systemd-timesyncd asks 10.0.2.2, which QEMU's user networking maps to
# the host's 127.0.0.1 (so a test can answer it there on UDP 123), then the
# Debian pool.
# (reimage's first boot writes its own reimage.conf there when the profile
# has time_servers; it sorts after this one and wins.)
mkdir -p "$root/etc/systemd/timesyncd.conf.d"
cat >"$root/etc/systemd/timesyncd.conf.d/10-qemu-host.conf" <<'EOF'
[Time]
NTP=10.0.2.2
EOF

# A firewall that is on and closed by default, as a hardened image ships it:
# loopback, replies, ICMP and SSH in; everything else dropped.
cat >"$root/etc/nftables.conf" <<'EOF'
#!/usr/sbin/nft -f
flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		ct state invalid drop
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 22 accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
EOF

in_root systemctl enable systemd-networkd.service systemd-timesyncd.service \
    nftables.service ssh.service reimage-ssh-host-key.service >/dev/null 2>&1 ||
    die "systemctl enable in the guest failed"
# Slurm's node daemon and MUNGE, installed but off: munge's postinst made a
# key, and a key in the image would be shared by every copy of it (and by
# anyone who reads the image). The cluster's key comes with the load (the
# Slurm test's post-load script writes it and starts both); without it
# munged would not start, and slurmd has no configuration yet.
rm -f "$root/etc/munge/munge.key"
in_root systemctl disable munge.service slurmd.service >/dev/null 2>&1 ||
    die "systemctl disable munge slurmd in the guest failed"
# e2scrub_reap checks LVM snapshots the guest never has, for 25 s under TCG.
ln -sf /dev/null "$root/etc/systemd/system/e2scrub_reap.service"
# The serial console is QEMU's -serial; getty on it comes from console=ttyS0.

# --- kernel: initrd with virtio, modules trimmed -----------------------------
# The initrd holds what mounting /dev/vda needs; MODULES=list keeps it small.
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk virtio_net virtio_rng ext4 crc32c_generic \
    >>"$root/etc/initramfs-tools/modules"
# Drivers for hardware a QEMU guest never has: most of the module tree's
# 400 MB. Kept: virtio, block, char (virtio-rng), net/virtio_net, veth (a
# test puts SSH clients with other source addresses in a network namespace
# in the guest), file systems, netfilter and the rest of net, crypto, lib.
moddir=$root/lib/modules/$kver/kernel
find "$moddir/drivers" -mindepth 1 -maxdepth 1 \
    ! -name virtio ! -name block ! -name char ! -name net -exec rm -rf {} +
find "$moddir/drivers/net" -mindepth 1 -maxdepth 1 \
    ! -name 'virtio_net.ko*' ! -name 'net_failover.ko*' ! -name 'veth.ko*' -exec rm -rf {} +
rm -rf "$moddir/sound" "$moddir/arch/x86/kvm" "$moddir/net/wireless" "$moddir/net/mac80211" "$moddir/net/bluetooth"
in_root depmod "$kver"
in_root update-initramfs -u -k "$kver" >/dev/null 2>&1 || die "update-initramfs in the guest failed"

# --- trim and pack -----------------------------------------------------------
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old "$root"/var/log/* \
    "$root"/tmp/* "$root"/var/tmp/*
# munged will not start without the log directory its package made.
in_root install -d -o munge -g munge -m 700 /var/log/munge
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"
# QEMU boots the uncompressed ELF kernel through its PVH entry point, which
# skips decompressing vmlinuz in the guest (seconds under TCG).
grep -q '^CONFIG_PVH=y' "$root/boot/config-$kver" || die "kernel $kver lacks CONFIG_PVH: QEMU cannot boot its vmlinux"
extract_vmlinux "$work/vmlinuz" "$work/vmlinux" || die "could not extract an ELF kernel from vmlinuz"

truncate -s "$disk_size" "$work/base.raw"
mkfs.ext4 -q -F -L debian-root -E root_owner=0:0 -d "$root" "$work/base.raw"
qemu-img convert -c -f raw -O qcow2 "$work/base.raw" "$work/base.qcow2"
rm -f "$work/base.raw"
used=$(du -sh "$root" | cut -f1)

cat >"$work/README" <<EOF
reimage Debian guest, built by examples/debian-guest/build.sh: Debian $suite from $mirror, kernel $kver
vmlinuz         the guest's /boot/vmlinuz-$kver
vmlinux         the same kernel uncompressed (ELF, PVH entry): boots faster under TCG
initrd.img      the guest's /boot/initrd.img-$kver (initramfs-tools, MODULES=list: virtio, ext4)
base.qcow2      root file system: ext4 on the whole disk ($disk_size, $used used); boot a fresh qcow2 overlay per load
id_ed25519      private test key, no passphrase; logs in as root
id_ed25519.pub  its public key (the guest's /root/.ssh/authorized_keys)
Kernel command line: root=/dev/vda rw console=ttyS0
EOF

# Publish: outputs first, the stamp last.
rm -f "$outdir/stamp"
for f in "${outputs[@]}"; do mv -f "$work/$f" "$outdir/$f"; done
printf '%s\n' "$stamp" >"$outdir/stamp"
log "done in $(($(date +%s) - started)) s: root file system $used, base.qcow2 $(du -h "$outdir/base.qcow2" | cut -f1), initrd $(du -h "$outdir/initrd.img" | cut -f1)"
printf '%s\n' "$outdir"
