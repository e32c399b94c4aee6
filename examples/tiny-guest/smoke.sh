#!/usr/bin/env bash
# Boot the tiny guest under QEMU (TCG, no KVM needed) and check what reimage's
# tests rely on: SSH login with the test key, a new boot id after `reboot`
# with the same host key and /var/lib kept, a new host key on a fresh overlay,
# `reimage.nossh`, `reimage.sshdelay`, `hostname`, `poweroff`. Prints the
# boot-to-SSH times (QEMU start to the first successful ssh command).
#
#   examples/tiny-guest/smoke.sh [OUTDIR]
#
# Environment: SMOKE_PORT (host port forwarded to the guest's 22, default
# 2222), SMOKE_ACCEL (default tcg), SMOKE_BOOTS (timed boots per kernel
# file, default 3). The checks boot vmlinux when the build made one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
outdir=$("$here/build.sh" "$@" | tail -n1)
port=${SMOKE_PORT:-2222}
accel=${SMOKE_ACCEL:-tcg}
boots=${SMOKE_BOOTS:-3}
kernel=$outdir/vmlinuz
[[ -s $outdir/vmlinux ]] && kernel=$outdir/vmlinux
tmp=$(mktemp -d /tmp/tiny-guest-smoke.XXXXXX)
pidfile=$tmp/qemu.pid
failures=0

cleanup() {
    stop_guest
    rm -rf "$tmp"
}
trap cleanup EXIT

log() { printf '%s\n' "$*"; }
pass() { log "PASS $*"; }
fail() {
    log "FAIL $*"
    failures=$((failures + 1))
}
# check NAME COMMAND...: PASS or FAIL NAME by the exit status of COMMAND.
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
same() { [[ $1 == "$2" ]]; }
differ() { [[ $1 != "$2" ]]; }

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

# start_guest APPEND [new]: boot with kernel command-line extras APPEND, on a
# fresh overlay when the second argument is "new" (a reload), else on the
# existing one (a power cycle of the same load).
start_guest() {
    if [[ ${2:-} == new ]]; then
        rm -f "$tmp/overlay.qcow2"
        qemu-img create -q -f qcow2 -b "$outdir/base.qcow2" -F qcow2 "$tmp/overlay.qcow2"
    fi
    : >"$tmp/console.log"
    # romfile= skips the NIC's iPXE option ROM: the kernel is loaded directly,
    # network boot is never used. virtio-rng seeds the guest's RNG at once,
    # so generating the host keys does not wait for entropy (about 1 s).
    qemu-system-x86_64 -machine q35 -accel "$accel" -m 256 -smp 1 \
        -nographic -no-user-config -nodefaults \
        -serial "file:$tmp/console.log" \
        -kernel "$kernel" -initrd "$outdir/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet $1" \
        -drive "file=$tmp/overlay.qcow2,if=virtio,format=qcow2" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" \
        -device virtio-net-pci,netdev=n0,romfile= -device virtio-rng-pci \
        -daemonize -pidfile "$pidfile"
}

stop_guest() {
    [[ -s $pidfile ]] || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$pidfile"
}

guest_ssh() {
    ssh -i "$outdir/id_ed25519" -p "$port" -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes \
        -o ConnectTimeout=5 root@127.0.0.1 "$@"
}

# wait_ssh SECONDS: until a command over SSH succeeds. With QEMU's user
# networking the host side of a forwarded port accepts at once, even while
# the guest is not up, and such a connection then hangs until ssh's
# ConnectTimeout. Sequential polls would measure that timeout, not the
# guest, so start a new attempt every half second, overlapping the others.
wait_ssh() {
    local deadline ok=$tmp/ssh.ok pids=() i=0
    deadline=$(($(date +%s) + $1))
    rm -f "$ok"
    while [[ ! -e $ok ]] && (($(date +%s) < deadline)); do
        if ((i % 5 == 0)); then
            (guest_ssh true 2>/dev/null && : >"$ok") &
            pids+=($!)
        fi
        sleep 0.1
        i=$((i + 1))
    done
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    [[ -e $ok ]]
}

host_key() { ssh-keyscan -p "$port" -t ed25519 127.0.0.1 2>/dev/null | awk '{ print $3 }'; }

wait_console() { # PATTERN SECONDS
    local i=0
    until grep -q "$1" "$tmp/console.log"; do
        ((i < $2 * 10)) || return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# --- boot, configure, reboot ---------------------------------------------------
start_guest "reimage.attempt=1" new
check "ssh login" wait_ssh 120
boot1=$(guest_ssh cat /proc/sys/kernel/random/boot_id)
key1=$(host_key)
check "/etc/reimage-image is tiny-linux" same "$(guest_ssh cat /etc/reimage-image)" tiny-linux
guest_ssh hostname demo-vm
check "hostname demo-vm" same "$(guest_ssh hostname)" demo-vm
echo "loaded" | guest_ssh sh -c "'mkdir -p /var/lib/reimage && cat > /var/lib/reimage/post-load'"
check "write /var/lib/reimage/post-load" same "$(guest_ssh cat /var/lib/reimage/post-load)" loaded
# Kill the listening dropbear: busybox init must start it again.
# shellcheck disable=SC2016 # expanded by the guest's shell
guest_ssh 'kill $(cat /run/dropbear.pid)'
check "console says sshd restarting" wait_console "sshd exited" 30
check "sshd respawned" wait_ssh 60
# The session may be cut before its exit status arrives; that is fine.
guest_ssh reboot || true
t=$(now)
# Until the guest answers again with another boot id: the old boot may still
# answer for a moment while it shuts down.
until wait_ssh 120 && boot2=$(guest_ssh cat /proc/sys/kernel/random/boot_id 2>/dev/null) && [[ $boot2 != "$boot1" ]]; do
    (($(echo "$(since "$t") < 120" | bc))) || break
    sleep 0.2
done
log "reboot to ssh: $(since "$t") s"
check "new boot id after reboot" differ "${boot2:-$boot1}" "$boot1"
check "same host key after reboot" same "$(host_key)" "$key1"
check "/var/lib kept across reboot" same "$(guest_ssh cat /var/lib/reimage/post-load)" loaded
check "hostname back to tiny" same "$(guest_ssh hostname)" tiny

# --- poweroff ----------------------------------------------------------------
qpid=$(cat "$pidfile")
guest_ssh poweroff || true
for _ in $(seq 1 100); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$qpid" 2>/dev/null; then fail "poweroff ends qemu"; else
    pass "poweroff ends qemu"
    rm -f "$pidfile"
fi
stop_guest

# --- fresh overlay: new host key, clean /var/lib -------------------------------------
start_guest "reimage.attempt=2" new
wait_ssh 120 || fail "ssh after reload"
check "new host key on a fresh overlay" differ "$(host_key)" "$key1"
check "fresh overlay starts clean" guest_ssh test ! -e /var/lib/reimage/post-load
stop_guest

# --- reimage.nossh -----------------------------------------------------------
start_guest "reimage.attempt=1 reimage.nossh=1,3" new
check "console says sshd disabled" wait_console "sshd disabled" 120
sleep 3 # give a wrongly started sshd the time to come up
if guest_ssh true 2>"$tmp/ssh.err"; then fail "nossh=1 attempt=1 keeps 22 closed"; else
    pass "nossh=1 attempt=1 keeps 22 closed ($(tr -d '\r' <"$tmp/ssh.err" | head -n1))"
fi
stop_guest
start_guest "reimage.attempt=2 reimage.nossh=1,3" new
check "nossh=1 attempt=2 starts sshd" wait_ssh 120
stop_guest

# --- reimage.sshdelay --------------------------------------------------------------
start_guest "reimage.attempt=1 reimage.sshdelay=5" new
check "console announces the delay" wait_console "starting sshd in 5s" 120
t=$(now)
wait_ssh 120 || true
d=$(since "$t")
check "sshdelay=5: ssh after $d s (>= 5)" same "$(echo "$d >= 5" | bc)" 1
stop_guest

# --- boot-to-SSH timings -----------------------------------------------------------
for kernel in "$outdir"/vmlinu[zx]; do
    for i in $(seq 1 "$boots"); do
        t=$(now)
        start_guest "reimage.attempt=1" new
        if wait_ssh 120 && guest_ssh cat /proc/sys/kernel/random/boot_id >/dev/null; then
            log "boot-to-ssh $(basename "$kernel") #$i ($accel): $(since "$t") s"
        else
            fail "boot $(basename "$kernel") #$i"
        fi
        stop_guest
    done
done

log "initramfs: $(stat -c %s "$outdir/initramfs.cpio.gz") bytes"
if ((failures > 0)); then
    log "$failures check(s) failed"
    exit 1
fi
log "all checks passed"
