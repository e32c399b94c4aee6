#!/usr/bin/env bash
# Boot the Debian guest under QEMU on fresh overlays and time it: QEMU start
# to the first successful SSH command, and what systemd-analyze says. Checks
# that each boot has a new machine id and host key.
#
#   examples/debian-guest/smoke.sh [OUTDIR]
#
# Environment: SMOKE_PORT (host port forwarded to the guest's 22, default
# 2223), SMOKE_ACCEL (default tcg), SMOKE_BOOTS (default 3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
outdir=$("$here/build.sh" "$@" | tail -n1)
port=${SMOKE_PORT:-2223}
accel=${SMOKE_ACCEL:-tcg}
boots=${SMOKE_BOOTS:-3}
tmp=$(mktemp -d /tmp/debian-guest-smoke.XXXXXX)
pidfile=$tmp/qemu.pid
failures=0

stop_guest() {
    [[ -s $pidfile ]] || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$pidfile"
}
cleanup() {
    stop_guest
    rm -rf "$tmp"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

start_guest() {
    rm -f "$tmp/overlay.qcow2"
    qemu-img create -q -f qcow2 -b "$outdir/base.qcow2" -F qcow2 "$tmp/overlay.qcow2"
    : >"$tmp/console.log"
    qemu-system-x86_64 -machine q35 -accel "$accel" -m 256 -smp 1 \
        -nographic -no-user-config -nodefaults \
        -serial "file:$tmp/console.log" \
        -kernel "$outdir/vmlinux" -initrd "$outdir/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 quiet" \
        -drive "file=$tmp/overlay.qcow2,if=virtio,format=qcow2" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" \
        -device virtio-net-pci,netdev=n0,romfile= -device virtio-rng-pci \
        -daemonize -pidfile "$pidfile"
}

guest_ssh() {
    ssh -i "$outdir/id_ed25519" -p "$port" -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes \
        -o ConnectTimeout=10 root@127.0.0.1 "$@"
}

# wait_ssh SECONDS: until a command over SSH succeeds. QEMU's user networking
# accepts on the forwarded port before the guest listens, and such a
# connection hangs until ConnectTimeout, so attempts overlap.
wait_ssh() {
    local deadline ok=$tmp/ssh.ok pids=() i=0
    deadline=$(($(date +%s) + $1))
    rm -f "$ok"
    while [[ ! -e $ok ]] && (($(date +%s) < deadline)); do
        if ((i % 10 == 0)); then
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

ids=() keys=()
for i in $(seq 1 "$boots"); do
    t=$(now)
    start_guest
    if wait_ssh 300; then
        printf 'boot-to-ssh #%s (%s): %.1f s; %s\n' "$i" "$accel" "$(since "$t")" \
            "$(guest_ssh systemd-analyze | head -n1)"
        ids+=("$(guest_ssh cat /etc/machine-id)")
        keys+=("$(guest_ssh cat /etc/ssh/ssh_host_ed25519_key.pub)")
    else
        echo "FAIL boot #$i: no SSH after 300 s; console:"
        tail -n 30 "$tmp/console.log"
        failures=$((failures + 1))
    fi
    stop_guest
done
if ((${#ids[@]} > 1)); then
    if (($(printf '%s\n' "${ids[@]}" | sort -u | wc -l) == ${#ids[@]})) &&
        (($(printf '%s\n' "${keys[@]}" | sort -u | wc -l) == ${#keys[@]})); then
        echo "PASS a new machine id and host key on every fresh overlay"
    else
        echo "FAIL machine ids or host keys repeat across fresh overlays"
        failures=$((failures + 1))
    fi
fi
echo "base.qcow2 $(du -h "$outdir/base.qcow2" | cut -f1), vmlinux $(du -h "$outdir/vmlinux" | cut -f1), initrd.img $(du -h "$outdir/initrd.img" | cut -f1)"
((failures == 0))
