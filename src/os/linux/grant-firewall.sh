# shellcheck shell=sh
# shellcheck disable=SC2154 # $dev, $nft_on, $ipt_on, $on, $root, $saved: firewall-common.sh's
# reimage grant/revoke: TCP PORTS (comma-joined: 22,8080) open from the
# sources given after TAG, and from nowhere else that TAG opened: the rules
# tagged TAG are replaced (none given: removed). Arguments: PORTS TAG
# [SOURCE...]. nftables: an accept per
# source at the head of every input base chain, comment TAG, also in
# /etc/nftables.conf between "# TAG begin/end"; iptables/ip6tables: an
# ACCEPT per source at the head of INPUT, comment TAG, saved where the boot
# loads them; firewalld: a rich rule per source and port in a zone (see
# its branch), the sources kept in /var/lib/reimage/grants/TAG (a line
# "PORTS SOURCE ZONE" each), the rules of the last ones taken out first;
# ufw: an allow per source, comment TAG, prepended, the sources kept as
# for firewalld ("PORTS SOURCE DEV"). Both keep one rule for identical
# ones: the other TAGs' rules are put back after a TAG's go.
# The same choice of firewall as the first boot's lockdown (firewall.sh).
# firewall-common.sh goes first and takes -i MAC (before PORTS) off the
# arguments: nftables binds by iifname, iptables by -i, ufw by "in on",
# firewalld by the zone of $dev; the old rules go by TAG whatever
# interface they were bound to.
ports=$1 tag=$2
shift 2
# One port or a set: nft's and iptables' words for it.
case "$ports" in
  *,*) nft_dport="{ $(echo "$ports" | sed 's/,/, /g') }"; ipt_dport="-m multiport --dports $ports";;
  *) nft_dport=$ports; ipt_dport="--dport $ports";;
esac
what="$ports/tcp from ${*:-nowhere}"
list=$root/var/lib/reimage/grants/$tag
old() { [ -f "$list" ] && cat "$list"; }
# The other tags' lines, each with its tag last: firewalld and ufw keep one
# rule for identical ones, so a revoke that takes out a rule another user
# shares puts that user's back.
others() {
  for f in "${list%/*}"/*; do
    [ -f "$f" ] && [ "$f" != "$list" ] && sed "s|\$| ${f##*/}|" "$f"
  done
  return 0
}
if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
  # A rich rule per source and port in the zone of $dev (with the first
  # boot's -i, not the private interface's zone reimage), or without -i in
  # the default zone and every active one; at runtime and in the
  # permanent configuration, with no reload. Rich rules carry no tag:
  # $list keeps "PORTS SOURCE ZONE" lines, and revoke takes those out.
  rule() { echo "rule family=$(fam "$2") source address=$2 port port=$1 protocol=tcp accept"; }
  # rich ZONE OP: the rich rules on stdin (one a line) added or removed,
  # now and for the boot.
  rich() {
    z=$1 op=$2; set --
    while IFS= read -r r; do [ -z "$r" ] || set -- "$@" "--$op-rich-rule=$r"; done
    [ $# -eq 0 ] || { firewall-cmd --zone="$z" "$@" >/dev/null &&
      firewall-cmd --permanent --zone="$z" "$@" >/dev/null; }
  }
  # rules PORTS SOURCE...: the rich rules, one a line.
  rules() { ps=$1; shift; for c in "$@"; do for p in $(echo "$ps" | tr , ' '); do rule "$p" "$c"; done; done; }
  def=$(firewall-cmd --get-default-zone) || exit 1
  if [ -n "$dev" ]; then
    zones=$(firewall-cmd --get-zone-of-interface="$dev" 2>/dev/null) || zones=$def
  else
    zones=$({ echo "$def"; firewall-cmd --get-active-zones | grep -v '^[[:space:]]'; } | sort -u | tr '\n' ' ')
    zones=${zones% }
  fi
  for z in $(old | awk -v d="$def" '{ print ($3 == "" ? d : $3) }' | sort -u); do
    old | while read -r ps c oz; do [ "${oz:-$def}" = "$z" ] && rules "$ps" "$c"; done | rich "$z" remove || exit 1
  done
  for z in $zones; do rules "$ports" "$@" | rich "$z" add || exit 1; done
  if [ -f "$list" ]; then
    others | while read -r ps c oz _; do rules "$ps" "$c" | rich "${oz:-$def}" add || exit 1; done || exit 1
  fi
  mkdir -p "${list%/*}" || exit 1
  if [ $# -eq 0 ]; then rm -f "$list"
  else for z in $zones; do for c in "$@"; do echo "$ports $c $z"; done; done > "$list" || exit 1; fi
  echo "firewalld: $what${dev:+ on $dev}${1:+ (zones $zones)}"
elif command -v ufw >/dev/null 2>&1 && LC_ALL=C ufw status 2>/dev/null | grep -q "Status: active"; then
  # ufw: an allow per source (with -i: "in on $dev" only), comment TAG,
  # prepended: first in its family's list (v4, v6), before the first
  # boot's deny of 22/tcp. The rules with comment TAG go first.
  LC_ALL=C ufw status numbered | awk -v t="# $tag" '/^\[ *[0-9]+\]/ {
      l = $0; sub(/[ \t]+$/, "", l)
      if (substr(l, length(l) - length(t) + 1) == t) { sub(/^\[ */, "", l); sub(/\].*/, "", l); print l } }' |
    sort -rn | while read -r n; do ufw --force delete "$n" >/dev/null || exit 1; done || exit 1
  allow() {
    if [ -n "$dev" ]; then set -- allow in on "$dev" from "$1"; else set -- allow from "$1"; fi
    ufw prepend "$@" to any port "$ports" proto tcp comment "$tag" >/dev/null
  }
  for c in "$@"; do allow "$c" || exit 1; done
  # $list: "PORTS SOURCE DEV" lines (- for every interface), for others.
  if [ -f "$list" ]; then
    others | while read -r ps c d t; do
      if [ "$d" = - ]; then set -- allow from "$c"; else set -- allow in on "$d" from "$c"; fi
      ufw prepend "$@" to any port "$ps" proto tcp comment "$t" >/dev/null || exit 1
    done || exit 1
  fi
  mkdir -p "${list%/*}" || exit 1
  if [ $# -eq 0 ]; then rm -f "$list"
  else for c in "$@"; do echo "$ports $c ${dev:--}"; done > "$list" || exit 1; fi
  echo "ufw: $what${dev:+ on $dev}"
elif ! ipt_saved && command -v nft >/dev/null 2>&1 && chains=$(nft list chains 2>/dev/null | awk '
    $1 == "table" { t = $2 " " $3 }
    $1 == "chain" { c = $2 }
    /hook input/ && t ~ /^(ip|ip6|inet) / { print t, c }') && [ -n "$chains" ]; then
  conf=$root/etc/nftables.conf
  cmds=$(printf '%s\n' "$chains" | while read -r f t c; do
    for s in "$@"; do
      case "$f $(fam "$s")" in "ip ipv6"|"ip6 ipv4") continue;; esac
      k=ip; [ "$(fam "$s")" = ipv6 ] && k=ip6
      echo "insert rule $f $t $c $nft_on$k saddr $s tcp dport $nft_dport accept comment \"$tag\""
    done
  done)
  del=$(printf '%s\n' "$chains" | while read -r f t c; do
    nft -a list chain "$f" "$t" "$c" | awk -v f="$f" -v t="$t" -v c="$c" -v tag="comment \"$tag\"" '
      index($0, tag) { print "delete rule", f, t, c, "handle", $NF }'
  done)
  printf '%s\n%s\n' "$del" "$cmds" | nft -f /dev/stdin || exit 1
  kept="not kept: no $conf"
  if [ -f "$conf" ]; then
    kept=$({ sed -e "/^# $tag begin\$/,/^# $tag end\$/d" "$conf"
      [ -z "$cmds" ] || printf '# %s begin\n%s\n# %s end\n' "$tag" "$cmds" "$tag"; } | nft_keep "$conf")
  fi
  echo "nftables: $what$on ($kept)"
elif command -v iptables >/dev/null 2>&1 && iptables -S INPUT >/dev/null 2>&1; then
  tools=iptables
  command -v ip6tables >/dev/null 2>&1 && ip6tables -S INPUT >/dev/null 2>&1 && tools="$tools ip6tables"
  for t in $tools; do
    # shellcheck disable=SC2086 # $r is a rule: split into its words
    $t -S INPUT | grep -e "--comment \"\{0,1\}$tag\"\{0,1\} -j ACCEPT\$" | sed 's/^-A //' |
      while read -r r; do $t -D $r || exit 1; done || exit 1
  done
  for c in "$@"; do
    t=iptables; [ "$(fam "$c")" = ipv6 ] && t=ip6tables
    rule="INPUT $ipt_on-p tcp -s $c $ipt_dport -m comment --comment $tag -j ACCEPT"
    # shellcheck disable=SC2086 # $rule is split into its words
    $t -C $rule 2>/dev/null || $t -I $rule || exit 1
  done
  kept=$(ipt_keep)
  [ -n "$kept" ] && kept="kept in${kept}" || kept="not kept: no saved rules"
  echo "iptables: $what$on ($kept)"
else
  echo "no firewall found: $ports/tcp open as the image has it"
fi
