#!/bin/sh
name="$1"
if command -v hostnamectl >/dev/null 2>&1 && hostnamectl set-hostname "$name" 2>/dev/null; then
  :
else
  hostname "$name" || exit 1
  if [ -w /etc/hostname ] || [ ! -e /etc/hostname ]; then printf '%s\n' "$name" > /etc/hostname 2>/dev/null || true; fi
fi
[ "$(hostname)" = "$name" ] || exit 1
# Debian maps its own name to 127.0.1.1 in /etc/hosts; keep that line in step
# so `hostname -f` and sudo resolve the new name. A name hostname accepted
# has no characters sed would read.
if grep -q '^127\.0\.1\.1[[:space:]]' /etc/hosts 2>/dev/null; then
  short=${name%%.*}
  if [ "$short" = "$name" ]; then line="127.0.1.1 $name"; else line="127.0.1.1 $name $short"; fi
  sed -i "s/^127\.0\.1\.1[[:space:]].*/$line/" /etc/hosts || exit 1
fi
echo "hostname is $name"
