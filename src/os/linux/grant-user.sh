#!/bin/sh
# reimage grant: the account USER for a reservation's user. Arguments:
# USER ADMIN(0|1) COMMENT KEYS-FILE PASSWORD-FILE (the files may be "").
# A missing account is made with a home; the keys in KEYS-FILE are added to
# its authorized_keys (those there stay: a second grant adds); the password
# in PASSWORD-FILE (USER:PW, as chpasswd reads it) is set; an account the
# image had (its comment not reimage's) is never taken over; with ADMIN 1 the
# user may run anything as root through sudo (/etc/sudoers.d/reimage-USER),
# with 0 that file goes. Both files are deleted. Exit 3: no useradd, or
# sudo asked for and none there (fatal).
u=$1 admin=$2 comment=$3 keys=$4 pw=$5
root=${REIMAGE_ROOT:-}
cleanup() { [ -z "$keys" ] || rm -f "$keys"; [ -z "$pw" ] || rm -f "$pw"; }
trap cleanup EXIT
said=""
if ! id "$u" >/dev/null 2>&1; then
  command -v useradd >/dev/null 2>&1 || { echo "no useradd on this image" >&2; exit 3; }
  sh=/bin/sh; [ -x /bin/bash ] && sh=/bin/bash
  useradd -m -s "$sh" -c "$comment" "$u" || exit 1
  said="user $u created"
else
  case $(getent passwd "$u" | cut -d: -f5) in
    "reimage reservation "*) ;;
    *) echo "user $u is an account of the image, not one reimage made: not taken over" >&2; exit 1;;
  esac
  said="user $u there"
fi
# The account may be locked by a revoke that was cut short.
usermod -U "$u" >/dev/null 2>&1 || true
usermod -e '' "$u" >/dev/null 2>&1 || true
home=$(getent passwd "$u" | cut -d: -f6)
[ -n "$home" ] || { echo "no home for $u" >&2; exit 1; }
group=$(id -gn "$u")
if [ -n "$keys" ]; then
  install -d -m 700 -o "$u" -g "$group" "$home/.ssh" || exit 1
  ak=$home/.ssh/authorized_keys
  touch "$ak" || exit 1
  n=0
  while IFS= read -r k; do
    [ -n "$k" ] || continue
    grep -qxF -- "$k" "$ak" || { printf '%s\n' "$k" >> "$ak" || exit 1; n=$((n+1)); }
  done < "$keys"
  chown "$u:$group" "$ak" && chmod 600 "$ak" || exit 1
  said="$said, $n new key(s) in $ak"
fi
if [ -n "$pw" ]; then
  chpasswd < "$pw" || exit 1
  said="$said, password set"
fi
sudoers=$root/etc/sudoers.d/reimage-$u
if [ "$admin" = 1 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "--admin: no sudo on this image" >&2; exit 3; }
  mkdir -p "$root/etc/sudoers.d" || exit 1
  printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$u" > "$sudoers.new" && chmod 440 "$sudoers.new" || exit 1
  if command -v visudo >/dev/null 2>&1 && ! visudo -cqf "$sudoers.new" >/dev/null 2>&1; then
    rm -f "$sudoers.new"; echo "visudo refuses the sudoers line for $u" >&2; exit 1
  fi
  mv -f "$sudoers.new" "$sudoers" || exit 1
  said="$said, sudo"
else
  rm -f "$sudoers"
fi
echo "$said"
