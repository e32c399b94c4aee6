# shellcheck shell=sh
# shellcheck disable=SC2154 # $dev, $nft_on, $ipt_on, $on, $root, $saved: firewall-common.sh's
# The first boot's lockdown: SSH (TCP 22) only from the sources given as
# arguments, in the firewall the image uses. firewall-common.sh goes
# first (it takes -i off the arguments); the drop is on every interface
# always, the accepts with -i on $dev only.
# @peer: the address this SSH connection comes from as the computer sees it
# (behind NAT, e.g. QEMU user networking, not the management node's own).
n=$#; i=0
while [ $i -lt $n ]; do
  c=$1; shift; i=$((i+1))
  [ "$c" = @peer ] && c=${SSH_CLIENT%% *}
  [ -n "$c" ] && set -- "$@" "$c"
done
if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
  # firewalld puts each packet in one zone (by its source, else by its
  # interface, else the default zone); a zone's rich rules see only its
  # packets. SSH (the service, 22/tcp, and the rich rules that let it in
  # from a source: a rerun's old ones too) goes from the default zone and
  # every active one. Without -i, each of them gets a rich rule per
  # source; with -i, $dev moves into zone reimage (made the first time
  # with the services and ports of $dev's zone, SSH aside), which alone
  # gets them: an allowed source on another interface is refused. All in
  # the permanent configuration, then reloaded.
  fwp() { firewall-cmd --permanent "$@" >/dev/null; }
  # rich ZONE OP: the rich rules on stdin (one a line) added or removed.
  rich() {
    z=$1 op=$2; set --
    while IFS= read -r r; do [ -z "$r" ] || set -- "$@" "--$op-rich-rule=$r"; done
    [ $# -eq 0 ] || fwp --zone="$z" "$@"
  }
  # sources ZONE SOURCE...: SSH in ZONE from the SOURCEs only.
  sources() {
    z=$1; shift
    all=$(firewall-cmd --permanent --zone="$z" --list-all) || return 1
    has() { printf '%s\n' "$all" | grep -qE "^ +$1:(.* )?$2( |\$)"; }
    if has services ssh; then fwp --zone="$z" --remove-service=ssh || return 1; fi
    if has ports 22/tcp; then fwp --zone="$z" --remove-port=22/tcp || return 1; fi
    printf '%s\n' "$all" | awk '/^\t/ && /service name="ssh"/ { sub(/^\t/, ""); print }' | rich "$z" remove || return 1
    for c in "$@"; do echo "rule family=$(fam "$c") source address=$c service name=ssh accept"; done | rich "$z" add
  }
  zones=$({ firewall-cmd --get-default-zone; firewall-cmd --get-active-zones | grep -v '^[[:space:]]'; } | sort -u | tr '\n' ' ')
  zones=${zones% }
  if [ -n "$dev" ]; then
    if ! firewall-cmd --permanent --get-zones | tr ' ' '\n' | grep -qx reimage; then
      was=$(firewall-cmd --get-zone-of-interface="$dev" 2>/dev/null) || was=$(firewall-cmd --get-default-zone)
      fwp --new-zone=reimage || exit 1
      for s in $(firewall-cmd --permanent --zone="$was" --list-services); do
        [ "$s" = ssh ] || fwp --zone=reimage --add-service="$s" || exit 1
      done
      for p in $(firewall-cmd --permanent --zone="$was" --list-ports); do
        [ "$p" = 22/tcp ] || fwp --zone=reimage --add-port="$p" || exit 1
      done
    fi
    fwp --zone=reimage --change-interface="$dev" || exit 1
  fi
  for z in $zones; do
    if [ -z "$dev" ]; then sources "$z" "$@"; elif [ "$z" != reimage ]; then sources "$z"; fi || exit 1
  done
  [ -z "$dev" ] || sources reimage "$@" || exit 1
  firewall-cmd --reload >/dev/null || exit 1
  # An interface NetworkManager holds keeps its zone at runtime until NM
  # hears of the new one (firewall-cmd told it): moved now too.
  [ -z "$dev" ] || firewall-cmd --zone=reimage --change-interface="$dev" >/dev/null || exit 1
  if [ -n "$dev" ]; then echo "firewalld: 22/tcp from $* on $dev (zone reimage)"
  else echo "firewalld: 22/tcp from $* (zones $zones)"; fi
elif command -v ufw >/dev/null 2>&1 && LC_ALL=C ufw status 2>/dev/null | grep -q "Status: active"; then
  # ufw: rules carry the comment reimage-ssh, so a rerun replaces them.
  # The image's rules for 22 from anywhere go (ufw keeps one rule per
  # match, whatever its action: one left would take the place of the
  # deny), then "deny 22/tcp" (every interface) and before it an allow
  # per source (with -i: "in on $dev" only), each prepended: first in its
  # family's list (v4, v6), before the image's rules.
  LC_ALL=C ufw status numbered | awk '/^\[ *[0-9]+\]/ {
      n = $0; sub(/^\[ */, "", n); sub(/\].*/, "", n)
      l = $0; sub(/[ \t]+$/, "", l)
      if (l ~ /# reimage-ssh$/) { print n; next }
      sub(/^\[ *[0-9]+\] */, "", l); sub(/ *#.*$/, "", l); split(l, f, /  +/)
      sub(/ \(v6\)$/, "", f[1]); sub(/ \(v6\)$/, "", f[3])
      if (f[1] ~ /^(22|22\/tcp|ssh|OpenSSH)$/ && f[3] == "Anywhere") print n }' |
    sort -rn | while read -r n; do ufw --force delete "$n" >/dev/null || exit 1; done || exit 1
  ufw prepend deny proto tcp from any to any port 22 comment reimage-ssh >/dev/null || exit 1
  allow() {
    if [ -n "$dev" ]; then set -- allow in on "$dev" from "$1"; else set -- allow from "$1"; fi
    ufw prepend "$@" to any port 22 proto tcp comment reimage-ssh >/dev/null
  }
  for c in "$@"; do allow "$c" || exit 1; done
  echo "ufw: 22/tcp from $*${dev:+ on $dev}"
elif ! ipt_saved && command -v nft >/dev/null 2>&1 && chains=$(nft list chains 2>/dev/null | awk '
    $1 == "table" { t = $2 " " $3 }
    $1 == "chain" { c = $2 }
    /hook input/ && t ~ /^(ip|ip6|inet) / { print t, c }') && [ -n "$chains" ]; then
  # Rules go into every base chain on the input hook: an accept in a table
  # of reimage's own would not stop another chain's drop. They carry the
  # comment reimage-ssh, so a rerun replaces them.
  conf=$root/etc/nftables.conf
  tag='comment "reimage-ssh"'
  cmds=$(printf '%s\n' "$chains" | while read -r f t c; do
    echo "add rule $f $t $c tcp dport 22 drop $tag"
    for s in "$@"; do
      case "$f $(fam "$s")" in "ip ipv6"|"ip6 ipv4") continue;; esac
      k=ip; [ "$(fam "$s")" = ipv6 ] && k=ip6
      echo "insert rule $f $t $c $nft_on$k saddr $s tcp dport 22 accept $tag"
    done
  done)
  del=$(printf '%s\n' "$chains" | while read -r f t c; do
    nft -a list chain "$f" "$t" "$c" | awk -v f="$f" -v t="$t" -v c="$c" '
      /comment "reimage-ssh"/ || /^[ \t]*tcp dport (22|ssh) accept # handle [0-9]+$/ { print "delete rule", f, t, c, "handle", $NF }'
  done)
  printf '%s\n%s\n' "$del" "$cmds" | nft -f /dev/stdin || exit 1
  # nftables.service loads /etc/nftables.conf at boot: the same there (its
  # open rule commented out, the commands appended) when it still checks.
  kept="not kept: no $conf"
  if [ -f "$conf" ]; then
    kept=$({ sed -e '/^# reimage-ssh begin$/,/^# reimage-ssh end$/d' \
        -e 's/^[[:space:]]*tcp dport \(22\|ssh\) accept$/# reimage-ssh: &/' "$conf"
      printf '# reimage-ssh begin\n%s\n# reimage-ssh end\n' "$cmds"; } | nft_keep "$conf")
  fi
  echo "nftables: 22/tcp from $*$on ($kept)"
elif command -v iptables >/dev/null 2>&1 && iptables -S INPUT >/dev/null 2>&1; then
  # Rules carry the comment reimage-ssh, so a rerun replaces them. The old
  # DROP goes first and the new one comes last, so the connection this
  # runs over is not cut off (a packet that meets a DROP policy in the few
  # commands between is retransmitted).
  tagged() { $1 -S INPUT | grep -e "--comment \"\{0,1\}reimage-ssh\"\{0,1\} -j $2\$" | sed 's/^-A //'; }
  tools=iptables
  command -v ip6tables >/dev/null 2>&1 && ip6tables -S INPUT >/dev/null 2>&1 && tools="$tools ip6tables"
  for t in $tools; do
    for j in DROP ACCEPT; do
      # shellcheck disable=SC2086 # $r is a rule: split into its words
      tagged "$t" "$j" | while read -r r; do $t -D $r || exit 1; done || exit 1
    done
  done
  for c in "$@"; do
    t=iptables; [ "$(fam "$c")" = ipv6 ] && t=ip6tables
    rule="INPUT $ipt_on-p tcp -s $c --dport 22 -m comment --comment reimage-ssh -j ACCEPT"
    # shellcheck disable=SC2086 # $rule is split into its words
    $t -C $rule 2>/dev/null || $t -I $rule || exit 1
  done
  for t in $tools; do
    # The image's rule that let SSH in from anywhere goes.
    i=0; while [ $i -lt 64 ] && $t -D INPUT -p tcp --dport 22 -j ACCEPT 2>/dev/null; do i=$((i+1)); done
    $t -A INPUT -p tcp --dport 22 -m comment --comment reimage-ssh -j DROP || exit 1
  done
  # Kept where the boot loads them ($saved).
  kept=$(ipt_keep)
  if [ -n "$kept" ]; then kept="kept in${kept}"
  else kept="not kept: no /etc/iptables/rules.v4 (iptables-persistent) or /etc/sysconfig/iptables (iptables-services)"; fi
  echo "iptables: 22/tcp from $*$on ($kept)"
else
  echo "no firewall found: nothing to restrict"
fi
