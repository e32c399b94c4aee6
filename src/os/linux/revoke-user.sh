#!/bin/sh
# reimage revoke: the account USER goes. It is locked and expired first, so
# no new login starts; then every process of it ends (its sessions: VCL's
# Linux.pm logoff_user does pkill -KILL -u), then the account and its home
# go, and its sudoers file. Nothing there is no error: revoke is idempotent.
# An account reimage did not make (its comment) is left alone: exit 1.
u=$1
root=${REIMAGE_ROOT:-}
rm -f "$root/etc/sudoers.d/reimage-$u"
if ! id "$u" >/dev/null 2>&1; then
  echo "no user $u: nothing to remove"
  exit 0
fi
case $(getent passwd "$u" | cut -d: -f5) in
  "reimage reservation "*) ;;
  *) echo "user $u is not one reimage made: left alone" >&2; exit 1;;
esac
usermod -L -e 1 "$u" >/dev/null 2>&1 || true
ended=0
i=0
while pgrep -u "$u" >/dev/null 2>&1 && [ $i -lt 50 ]; do
  pkill -KILL -u "$u" >/dev/null 2>&1 && ended=1
  sleep 0.2
  i=$((i+1))
done
if command -v loginctl >/dev/null 2>&1; then loginctl terminate-user "$u" >/dev/null 2>&1 || true; fi
if pgrep -u "$u" >/dev/null 2>&1; then echo "processes of $u keep running" >&2; exit 1; fi
userdel -r "$u" >/dev/null 2>&1 || userdel "$u" || exit 1
if [ $ended = 1 ]; then echo "user $u logged out and removed"; else echo "user $u removed"; fi
