#!/bin/sh
# What the firewall programs share (firewall.sh, the first boot's lockdown;
# grant-firewall.sh, grant's and revoke's rules): this text goes before
# each of them in the one file that runs (first_boot.rs, FIREWALL and
# GRANT_FIREWALL). It takes a leading `-i MAC` or `-i @peer` off the
# arguments: the accepts bind to the interface that has MAC ($dev), or
# with @peer to the one this SSH connection came in on (the one the route
# to SSH_CLIENT's address leaves through: a computer whose config names no
# private MAC). An interface not found is exit 1. Without -i, $dev is
# empty: every interface.
fam() { case "$1" in *:*) echo ipv6;; *) echo ipv4;; esac; }
dev=
if [ "${1:-}" = -i ]; then
  if [ "$2" = @peer ]; then
    peer=${SSH_CLIENT%% *}
    [ -n "$peer" ] || { echo "-i @peer: no SSH_CLIENT to find the interface by" >&2; exit 1; }
    dev=$(ip -o route get "$peer" | awk '{
      for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
    [ -n "$dev" ] || { echo "no route to $peer: its interface is unknown" >&2; exit 1; }
  else
    mac=$(printf '%s' "$2" | tr A-F a-f)
    dev=$(ip -o link show | awk -v m="$mac" '{
      for (i = 1; i < NF; i++) if ($i == "link/ether" && tolower($(i + 1)) == m) {
        n = $2; sub(/:$/, "", n); sub(/@.*/, "", n); print n; exit } }')
    [ -n "$dev" ] || { echo "no interface has MAC $mac" >&2; exit 1; }
  fi
  shift 2
fi
# The words that bind a rule to $dev, and what the last line says of it.
# shellcheck disable=SC2034 # used by the program that follows
nft_on=${dev:+iifname \"$dev\" } ipt_on=${dev:+-i $dev } on=${dev:+ on $dev}
root=${REIMAGE_ROOT:-}
# An image whose boot restores saved iptables rules (iptables-persistent,
# iptables-services) takes the iptables branch even where nft is there
# too: iptables-nft's own tables show up in nft, but /etc/nftables.conf is
# not what that boot loads.
# TOOL:FILE for each: iptables-persistent (Debian, Ubuntu), then
# iptables-services (RHEL family).
saved="iptables:/etc/iptables/rules.v4 ip6tables:/etc/iptables/rules.v6
iptables:/etc/sysconfig/iptables ip6tables:/etc/sysconfig/ip6tables"
ipt_saved() {
  command -v iptables >/dev/null 2>&1 && iptables -S INPUT >/dev/null 2>&1 || return 1
  for e in $saved; do [ -f "$root${e#*:}" ] && return 0; done
  return 1
}
# ipt_keep: the rules iptables and ip6tables hold now saved where the boot
# loads them ($saved); prints those files, nothing when there are none.
ipt_keep() {
  for e in $saved; do
    t=${e%%:*}; f=$root${e#*:}
    { [ -f "$f" ] && command -v "$t-save" >/dev/null 2>&1; } || continue
    if "$t-save" > "$f.reimage" && cat "$f.reimage" > "$f"; then printf ' %s' "$f"; fi
    rm -f "$f.reimage"
  done
}
# nft_keep CONF: CONF replaced by standard input when that checks (nft -c,
# as nftables.service loads it at boot); prints what came of it.
nft_keep() {
  cat > "$1.reimage"
  if ! nft -c -f "$1.reimage" >/dev/null 2>&1; then echo "not kept: $1 with them does not check"
  elif cat "$1.reimage" > "$1"; then echo "kept in $1"
  else echo "not kept: $1 cannot be written"; fi
  rm -f "$1.reimage"
}
