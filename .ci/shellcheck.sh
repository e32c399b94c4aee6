#!/usr/bin/env bash
# Lints every shell script of the repository with shellcheck at its default
# severity (style and up): any finding fails. A script is a file named *.sh,
# or one whose first line is a #! for sh, bash or dash (examples/tiny-guest/
# init, tests/standins/xcat/xcatclient, ...); the programs the linux first
# boot runs are src/os/linux/*.sh. Sourced files follow from the script's
# own folder (-P SCRIPTDIR).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts=()
while IFS= read -r -d '' f; do
  case "$f" in
    *.sh) scripts+=("$f") ;;
    *) if head -n 1 "$f" 2>/dev/null | grep -Eq '^#!.*[/ ](sh|bash|dash)([[:space:]]|$)'; then
         scripts+=("$f")
       fi ;;
  esac
done < <(find . \( -path ./target -o -path ./.git \) -prune -o -type f -print0)
[ "${#scripts[@]}" -gt 0 ] || { echo "shellcheck: no shell scripts found" >&2; exit 1; }
shellcheck -x -P SCRIPTDIR "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean"
