#!/bin/sh
# Prints the executable files of the image's /etc/reimage/post-load.d (the
# caller sorts them by name); nothing without the folder.
d="${REIMAGE_ROOT:-}/etc/reimage/post-load.d"
[ -d "$d" ] || exit 0
for f in "$d"/*; do
  if [ -f "$f" ] && [ -x "$f" ]; then printf '%s\n' "$f"; fi
done
exit 0
