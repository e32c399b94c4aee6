#!/bin/sh
d="${REIMAGE_ROOT:-}/root/.ssh"
[ -d "$d" ] || { echo "no $d: no keys"; exit 0; }
removed=""
for f in "$d"/*; do
  [ -f "$f" ] || continue
  case "${f##*/}" in *.pub|authorized_keys*|known_hosts*|config) continue;; esac
  if head -n 1 "$f" 2>/dev/null | grep -q -- "-----BEGIN .*PRIVATE KEY-----"; then
    rm -f "$f" "$f.pub" || exit 1
    removed="$removed ${f##*/}"
  fi
done
echo "private keys removed:${removed:- none}"
