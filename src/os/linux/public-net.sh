#!/bin/sh
# The public interface, found by its MAC ($1), gets a static address
# ($2 = ADDR/PREFIX, $3 = gateway or "", then DNS servers) or DHCP ($2 =
# "dhcp"), through what the image runs: systemd-networkd (a .network file
# that sorts before the image's own), NetworkManager (a connection bound to
# the MAC) or ifupdown (interfaces.d). Prints "public interface IFACE
# (TOOL): ADDR/PREFIX", the address the interface has afterwards. Exit 3: no interface with that
# MAC (the hardware is not what the configuration says); 4: no tool this
# program knows; 5: no IPv4 address came within 60 s.
set -u
mac=$(printf %s "$1" | tr 'A-F' 'a-f')
mode=$2
gw=${3:-}
shift 3
root=${REIMAGE_ROOT:-}
ifc=
for d in "$root"/sys/class/net/*; do
  [ -r "$d/address" ] || continue
  if [ "$(cat "$d/address")" = "$mac" ]; then ifc=${d##*/}; break; fi
done
if [ -z "$ifc" ]; then
  echo "no interface has MAC $mac" >&2
  exit 3
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet systemd-networkd; then
  tool=systemd-networkd
  f=$root/etc/systemd/network/01-reimage-public.network
  {
    printf '# reimage: the public interface, by its MAC\n[Match]\nMACAddress=%s\n\n[Network]\n' "$mac"
    if [ "$mode" = dhcp ]; then
      printf 'DHCP=ipv4\n'
    else
      printf 'Address=%s\n' "$mode"
      [ -n "$gw" ] && printf 'Gateway=%s\n' "$gw"
      for s in "$@"; do printf 'DNS=%s\n' "$s"; done
    fi
  } >"$f.tmp" && mv "$f.tmp" "$f" || exit 1
  networkctl reload >&2 || exit 1
  ip -4 addr flush dev "$ifc" >&2
  networkctl reconfigure "$ifc" >&2 || exit 1
elif command -v nmcli >/dev/null 2>&1 && nmcli -t -f RUNNING general 2>/dev/null | grep -q running; then
  tool=NetworkManager
  nmcli connection delete reimage-public >/dev/null 2>&1
  if [ "$mode" = dhcp ]; then
    nmcli connection add type ethernet con-name reimage-public ifname "$ifc" \
      ethernet.mac-address "$mac" ipv4.method auto >&2 || exit 1
  else
    nmcli connection add type ethernet con-name reimage-public ifname "$ifc" \
      ethernet.mac-address "$mac" ipv4.method manual ipv4.addresses "$mode" \
      ipv4.gateway "$gw" ipv4.dns "$*" >&2 || exit 1
  fi
  nmcli connection up reimage-public >&2 || exit 1
elif [ -d "$root/etc/network" ] && command -v ifup >/dev/null 2>&1; then
  tool=ifupdown
  mkdir -p "$root/etc/network/interfaces.d"
  f=$root/etc/network/interfaces.d/reimage-public
  ifdown "$ifc" >/dev/null 2>&1
  {
    printf '# reimage: the public interface (MAC %s)\nauto %s\n' "$mac" "$ifc"
    if [ "$mode" = dhcp ]; then
      printf 'iface %s inet dhcp\n' "$ifc"
    else
      printf 'iface %s inet static\n  address %s\n' "$ifc" "$mode"
      [ -n "$gw" ] && printf '  gateway %s\n' "$gw"
      [ $# -gt 0 ] && printf '  dns-nameservers %s\n' "$*"
    fi
  } >"$f.tmp" && mv "$f.tmp" "$f" || exit 1
  ifup "$ifc" >&2 || exit 1
else
  echo "none of systemd-networkd, NetworkManager or ifupdown runs here" >&2
  exit 4
fi
i=0
while [ $i -lt 60 ]; do
  a=$(ip -4 -o addr show dev "$ifc" scope global 2>/dev/null | awk '{print $4; exit}')
  if [ -n "$a" ]; then
    echo "public interface $ifc ($tool): $a"
    exit 0
  fi
  sleep 1
  i=$((i + 1))
done
echo "$ifc has no IPv4 address after 60 s ($tool)" >&2
exit 5
