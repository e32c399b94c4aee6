#!/bin/sh
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for u in ssh.service sshd.service; do
    if systemctl list-unit-files "$u" 2>/dev/null | grep -q "^$u"; then
      # Enabling an enabled unit is not free on Debian: systemd-sysv-install
      # runs update-rc.d (Perl), many seconds on a slow VM.
      if [ "$(systemctl is-enabled "$u" 2>/dev/null)" = enabled ]; then echo "$u already enabled"; exit 0; fi
      systemctl enable "$u" >/dev/null 2>&1 && echo "$u enabled" && exit 0
    fi
  done
  echo "no ssh unit to enable"; exit 0
fi
echo "no systemd: sshd is started by the image's own init"
