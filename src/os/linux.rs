//! Linux first-boot configuration: hostname, sshd enabled, SSH open only
//! from the management network, the clock synced, private keys that came
//! with the image removed, the post-load marker, the image's own scripts,
//! then a fresh root password (Apache VCL's Linux.pm post_load does the
//! same: firewall, synchronize_time, set_password, clear_private_keys). Each
//! action is idempotent and tolerates what a small image lacks (no systemd,
//! no firewall), saying so in its event.
//!
//! The scripts take every file path under `${REIMAGE_ROOT:-}`: unset on a
//! real computer; the tests set it (sshd's SetEnv) so the scripts run on
//! the CI machine without touching its own /root/.ssh.

use std::time::SystemTime;

use super::actions::Actions;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::control::Channel;
use crate::outcome::Outcome;
use crate::report::{Reporter, rfc3339};

/// Where the post-load marker goes; a later run reads it to see that
/// post-load already ran for this load.
pub const MARKER: &str = "/var/lib/reimage/post-load";

const HOSTNAME: &str = r#"name="$1"
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
echo "hostname is $name""#;

const SSHD: &str = r#"if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
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
echo "no systemd: sshd is started by the image's own init""#;

/// Opens SSH (TCP 22) only from the sources given as arguments: firewalld
/// (rich rules, the open `ssh` service removed), ufw (`allow from`, the
/// open rules deleted), nftables (Debian's default since 10: in every input
/// base chain, the open `tcp dport 22 accept` out, an accept per source at
/// the head, a drop for the rest at the end; also in /etc/nftables.conf) or
/// iptables/ip6tables (ACCEPT from each source, then DROP for the rest;
/// also in iptables-persistent's or iptables-services' saved rules, and
/// taken before nftables when the image has those).
/// Ping is left to the image's firewall (in the man page).
const FIREWALL: &str = r#"fam() { case "$1" in *:*) echo ipv6;; *) echo ipv4;; esac; }
# @peer: the address this SSH connection comes from as the computer sees it
# (behind NAT, e.g. QEMU user networking, not the management node's own).
n=$#; i=0
while [ $i -lt $n ]; do
  c=$1; shift; i=$((i+1))
  [ "$c" = @peer ] && c=${SSH_CLIENT%% *}
  [ -n "$c" ] && set -- "$@" "$c"
done
# An image whose boot restores saved iptables rules (iptables-persistent,
# iptables-services) takes the iptables branch even where nft is there
# too: iptables-nft's own tables show up in nft, but /etc/nftables.conf is
# not what that boot loads.
# TOOL:FILE for each: iptables-persistent (Debian, Ubuntu), then
# iptables-services (RHEL family).
saved="iptables:/etc/iptables/rules.v4 ip6tables:/etc/iptables/rules.v6
iptables:/etc/sysconfig/iptables ip6tables:/etc/sysconfig/ip6tables"
ipt_saved() {
  command -v iptables >/dev/null 2>&1 && iptables -S INPUT >/dev/null 2>&1 || return 1
  for e in $saved; do [ -f "${REIMAGE_ROOT:-}${e#*:}" ] && return 0; done
  return 1
}
if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
  firewall-cmd --permanent --remove-service=ssh >/dev/null 2>&1
  for c in "$@"; do
    firewall-cmd --permanent --add-rich-rule="rule family=$(fam "$c") source address=$c service name=ssh accept" >/dev/null || exit 1
  done
  firewall-cmd --reload >/dev/null && echo "firewalld: ssh from $*"
elif command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q "Status: active"; then
  for r in 22/tcp 22 ssh OpenSSH; do ufw delete allow "$r" >/dev/null 2>&1; done
  for c in "$@"; do ufw allow from "$c" to any port 22 proto tcp >/dev/null || exit 1; done
  echo "ufw: 22/tcp from $*"
elif ! ipt_saved && command -v nft >/dev/null 2>&1 && chains=$(nft list chains 2>/dev/null | awk '
    $1 == "table" { t = $2 " " $3 }
    $1 == "chain" { c = $2 }
    /hook input/ && t ~ /^(ip|ip6|inet) / { print t, c }') && [ -n "$chains" ]; then
  # Rules go into every base chain on the input hook: an accept in a table
  # of reimage's own would not stop another chain's drop. They carry the
  # comment reimage-ssh, so a rerun replaces them.
  conf=${REIMAGE_ROOT:-}/etc/nftables.conf
  tag='comment "reimage-ssh"'
  cmds=$(printf '%s\n' "$chains" | while read -r f t c; do
    echo "add rule $f $t $c tcp dport 22 drop $tag"
    for s in "$@"; do
      case "$f $(fam "$s")" in "ip ipv6"|"ip6 ipv4") continue;; esac
      k=ip; [ "$(fam "$s")" = ipv6 ] && k=ip6
      echo "insert rule $f $t $c $k saddr $s tcp dport 22 accept $tag"
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
    { sed -e '/^# reimage-ssh begin$/,/^# reimage-ssh end$/d' \
        -e 's/^[[:space:]]*tcp dport \(22\|ssh\) accept$/# reimage-ssh: &/' "$conf"
      printf '# reimage-ssh begin\n%s\n# reimage-ssh end\n' "$cmds"; } > "$conf.reimage"
    if nft -c -f "$conf.reimage" >/dev/null 2>&1; then
      cat "$conf.reimage" > "$conf" && kept="kept in $conf"
    else
      kept="not kept: $conf with them does not check"
    fi
    rm -f "$conf.reimage"
  fi
  echo "nftables: 22/tcp from $* ($kept)"
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
      tagged $t $j | while read -r r; do $t -D $r || exit 1; done || exit 1
    done
  done
  for c in "$@"; do
    t=iptables; [ "$(fam "$c")" = ipv6 ] && t=ip6tables
    rule="INPUT -p tcp -s $c --dport 22 -m comment --comment reimage-ssh -j ACCEPT"
    $t -C $rule 2>/dev/null || $t -I $rule || exit 1
  done
  for t in $tools; do
    # The image's rule that let SSH in from anywhere goes.
    i=0; while [ $i -lt 64 ] && $t -D INPUT -p tcp --dport 22 -j ACCEPT 2>/dev/null; do i=$((i+1)); done
    $t -A INPUT -p tcp --dport 22 -m comment --comment reimage-ssh -j DROP || exit 1
  done
  # Kept where the boot loads them ($saved).
  kept=""
  for e in $saved; do
    t=${e%%:*}; f=${REIMAGE_ROOT:-}${e#*:}
    [ -f "$f" ] && command -v "$t-save" >/dev/null 2>&1 || continue
    if "$t-save" > "$f.reimage" && cat "$f.reimage" > "$f"; then kept="$kept $f"; fi
    rm -f "$f.reimage"
  done
  if [ -n "$kept" ]; then kept="kept in${kept}"
  else kept="not kept: no /etc/iptables/rules.v4 (iptables-persistent) or /etc/sysconfig/iptables (iptables-services)"; fi
  echo "iptables: 22/tcp from $* ($kept)"
else
  echo "no firewall found: nothing to restrict"
fi"#;

/// Removes the private keys under root's ~/.ssh that came with the image
/// (and their .pub): VCL's Linux.pm clear_private_keys removes root's
/// id_rsa; any file whose first line is a PEM or OpenSSH private-key header
/// goes here. authorized_keys, known_hosts and config stay.
const SCRUB_KEYS: &str = r#"d="${REIMAGE_ROOT:-}/root/.ssh"
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
echo "private keys removed:${removed:- none}""#;

/// Points the clock at the servers given as arguments and syncs it:
/// chrony (runtime sources, then a step), systemd-timesyncd (a drop-in,
/// restarted, waited for), or ntpdate. VCL's Linux.pm synchronize_time
/// uses rdate/ntpd; today's images ship these instead. Exit 3: no tool
/// (fatal); other failures: a server that did not answer (retry).
const TIME: &str = r#"if command -v chronyc >/dev/null 2>&1 && chronyc tracking >/dev/null 2>&1; then
  for s in "$@"; do chronyc add server "$s" iburst >/dev/null 2>&1; done
  chronyc waitsync 6 >/dev/null || { echo "chrony: no server answered" >&2; exit 1; }
  chronyc -a makestep >/dev/null; echo "chrony: synced from $*"
elif command -v timedatectl >/dev/null 2>&1 && systemctl is-active --quiet systemd-timesyncd 2>/dev/null; then
  d="${REIMAGE_ROOT:-}/etc/systemd/timesyncd.conf.d"
  mkdir -p "$d" && printf '[Time]\nNTP=%s\n' "$*" > "$d/reimage.conf" || exit 1
  systemctl restart systemd-timesyncd && timedatectl set-ntp true || exit 1
  i=0; until [ "$(timedatectl show -p NTPSynchronized --value 2>/dev/null)" = yes ]; do
    i=$((i+1)); [ $i -gt 60 ] && { echo "timesyncd: not synced after 60 s" >&2; exit 1; }; sleep 1
  done
  echo "timesyncd: synced from $*"
elif command -v ntpdate >/dev/null 2>&1; then
  ntpdate -u "$@" >/dev/null && echo "ntpdate: synced from $*"
else
  echo "no chrony, systemd-timesyncd or ntpdate to sync the clock" >&2; exit 3
fi"#;

/// Sets root's password from the file named by the argument (`root:PW`, as
/// chpasswd reads it on stdin) and deletes the file: the password never
/// reaches a command line.
const PASSWORD: &str =
    r#"chpasswd < "$1"; rc=$?; rm -f "$1"; [ $rc -eq 0 ] && echo "password of root set"; exit $rc"#;

fn sh(script: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec!["sh".to_string(), "-c".into(), script.into(), "sh".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// The post-load marker's text.
pub fn marker(plan: &Plan, attempt: Attempt) -> String {
    format!(
        "image={}\nreservation={}\nattempt={}\ntime={}\n",
        plan.image.name,
        plan.reservation.as_deref().unwrap_or(""),
        attempt.number,
        rfc3339(SystemTime::now())
    )
}

/// Runs the Linux first-boot configuration.
pub fn first_boot(
    plan: &Plan,
    attempt: Attempt,
    ch: &mut dyn Channel,
    state: &crate::state::StateDir,
    report: &Reporter,
) -> Result<(), Outcome> {
    let mut allow_from = super::allow_from(plan).map_err(Outcome::Fatal)?;
    if plan.profile.allow_from.is_empty() {
        allow_from.push("@peer".into());
    }
    let mut a = Actions::new(plan, attempt, ch, report);
    let name = plan.computer.name.as_str();
    // A hostname or unit that cannot be set will not be fixed by a reload
    // of the same image.
    a.run("set-hostname", &sh(HOSTNAME, &[name]), Outcome::Fatal)?;
    a.run("enable-sshd", &sh(SSHD, &[]), Outcome::Fatal)?;
    let from: Vec<&str> = allow_from.iter().map(String::as_str).collect();
    a.run("firewall-ssh", &sh(FIREWALL, &from), Outcome::Fatal)?;
    let servers: Vec<&str> = plan
        .profile
        .time_servers
        .iter()
        .map(String::as_str)
        .collect();
    if !servers.is_empty() {
        a.run_classified("time-sync", &sh(TIME, &servers), |code| {
            if code == 3 {
                Outcome::Fatal
            } else {
                Outcome::Retry
            }
        })?;
    }
    a.run("remove-private-keys", &sh(SCRUB_KEYS, &[]), Outcome::Fatal)?;
    a.run(
        "mkdir-state",
        &sh("mkdir -p /var/lib/reimage/scripts", &[]),
        Outcome::Retry,
    )?;
    a.upload(
        "write-marker",
        marker(plan, attempt).as_bytes(),
        MARKER,
        0o644,
    )?;
    a.scripts("/var/lib/reimage/scripts", '/', |p| vec![p.to_string()])?;
    let Some(pw) = super::new_password(plan, state, report)? else {
        return Ok(());
    };
    // Named after this run, so two runs against one host (tests, or a
    // computer that is its own management node) never share the file.
    let file = format!("/var/lib/reimage/root-password.{}", std::process::id());
    a.upload(
        "upload-root-password",
        format!("root:{}\n", pw.expose()).as_bytes(),
        &file,
        0o600,
    )?;
    let r = a.run("set-root-password", &sh(PASSWORD, &[&file]), Outcome::Fatal);
    if r.is_err() {
        let _ = a.ch.run(&sh(r#"rm -f "$1""#, &[&file]), a.timeout);
    }
    r.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// Where a system tool lives, for the netns tests' PATH.
    fn system_tool(name: &str) -> PathBuf {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!("{name} is missing: install iptables and nftables (.ci/run does)")
            })
    }

    /// Runs `body` (sh) as root in a new network namespace of its own, so
    /// the real iptables and nft change nothing outside it. `$FW` is a file
    /// holding FIREWALL, `$ROOT` a scratch root (REIMAGE_ROOT), PATH holds
    /// only `tools` (linked from the system) and /bin:/usr/bin. Returns
    /// stdout; panics with stderr unless it exits 0.
    fn in_netns(
        tag: &str,
        tools: &[&str],
        root_files: &[(&str, &str)],
        body: &str,
    ) -> (String, PathBuf) {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("reimage-fw-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).expect("temp dir");
        for t in tools {
            symlink(system_tool(t), dir.join("bin").join(t)).expect("symlink");
        }
        std::fs::create_dir_all(dir.join("root")).expect("root dir");
        for (f, text) in root_files {
            let p = dir.join("root").join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("root dir");
            std::fs::write(&p, text).expect("root file");
        }
        std::fs::write(dir.join("fw.sh"), FIREWALL).expect("script");
        let out = std::process::Command::new(system_tool("unshare"))
            .args(["--net", "/bin/sh", "-ec", body])
            .env_clear()
            .env(
                "PATH",
                format!("{}:/bin:/usr/bin", dir.join("bin").display()),
            )
            .env("FW", dir.join("fw.sh"))
            .env("ROOT", dir.join("root"))
            .env("REIMAGE_ROOT", dir.join("root"))
            .env("SSH_CLIENT", "10.0.2.2 40000 22")
            .output()
            .expect("unshare runs");
        assert!(
            out.status.success(),
            "needs root (unshare --net): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (String::from_utf8_lossy(&out.stdout).into_owned(), dir)
    }

    /// The rules of `text` (`iptables -S INPUT`) between two markers.
    fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.split(&format!("== {name}\n"))
            .nth(1)
            .unwrap_or("")
            .lines()
            .take_while(|l| !l.starts_with("== "))
            .collect()
    }

    const IPT: &[&str] = &["iptables", "ip6tables", "iptables-save", "ip6tables-save"];

    #[test]
    fn iptables_opens_ssh_to_the_sources_only_and_keeps_it_for_the_boot() {
        // The real iptables (Debian's, nf_tables backend) in a namespace of
        // its own; an image that lets SSH in from anywhere and ships
        // iptables-persistent's (empty) rules files. nft is there too, as on
        // Debian, and sees iptables-nft's tables; the saved rules files make
        // it the iptables branch. A source named twice gets one rule.
        let body = r#"
iptables -A INPUT -i lo -j ACCEPT
iptables -A INPUT -p tcp --dport 22 -j ACCEPT
ip6tables -A INPUT -p tcp --dport 22 -j ACCEPT
echo "== first"; sh "$FW" 192.0.2.5 2001:db8::1 @peer 192.0.2.5
echo "== v4"; iptables -S INPUT; echo "== v6"; ip6tables -S INPUT
echo "== second"; sh "$FW" 198.51.100.7
echo "== v4 again"; iptables -S INPUT; echo "== v6 again"; ip6tables -S INPUT
echo "== end"
"#;
        let files = [("etc/iptables/rules.v4", ""), ("etc/iptables/rules.v6", "")];
        let with_nft = [IPT, &["nft"]].concat();
        let (out, dir) = in_netns("ipt", &with_nft, &files, body);
        let root = dir.join("root");
        let v4file = root.join("etc/iptables/rules.v4");
        let v6file = root.join("etc/iptables/rules.v6");
        assert_eq!(
            section(&out, "first"),
            [format!(
                "iptables: 22/tcp from 192.0.2.5 2001:db8::1 10.0.2.2 192.0.2.5 (kept in {} {})",
                v4file.display(),
                v6file.display()
            )],
            "{out}"
        );
        let tag = "-m comment --comment reimage-ssh";
        assert_eq!(
            section(&out, "v4"),
            [
                "-P INPUT ACCEPT".to_string(),
                // @peer: behind QEMU's NAT the computer sees 10.0.2.2.
                format!("-A INPUT -s 10.0.2.2/32 -p tcp -m tcp --dport 22 {tag} -j ACCEPT"),
                format!("-A INPUT -s 192.0.2.5/32 -p tcp -m tcp --dport 22 {tag} -j ACCEPT"),
                "-A INPUT -i lo -j ACCEPT".to_string(),
                // The image's open rule is gone; the rest is dropped.
                format!("-A INPUT -p tcp -m tcp --dport 22 {tag} -j DROP"),
            ],
            "{out}"
        );
        assert_eq!(
            section(&out, "v6"),
            [
                "-P INPUT ACCEPT".to_string(),
                format!("-A INPUT -s 2001:db8::1/128 -p tcp -m tcp --dport 22 {tag} -j ACCEPT"),
                format!("-A INPUT -p tcp -m tcp --dport 22 {tag} -j DROP"),
            ],
            "{out}"
        );
        // A rerun replaces its own rules (the old sources go) and keeps
        // the image's others.
        assert_eq!(
            section(&out, "v4 again"),
            [
                "-P INPUT ACCEPT".to_string(),
                format!("-A INPUT -s 198.51.100.7/32 -p tcp -m tcp --dport 22 {tag} -j ACCEPT"),
                "-A INPUT -i lo -j ACCEPT".to_string(),
                format!("-A INPUT -p tcp -m tcp --dport 22 {tag} -j DROP"),
            ],
            "{out}"
        );
        assert_eq!(
            section(&out, "v6 again"),
            [
                "-P INPUT ACCEPT".to_string(),
                format!("-A INPUT -p tcp -m tcp --dport 22 {tag} -j DROP"),
            ],
            "{out}"
        );
        // What the boot loads (iptables-restore of rules.v4) is the last
        // run's rules.
        let v4 = std::fs::read_to_string(&v4file).expect("rules.v4");
        assert!(
            v4.contains("*filter\n") && v4.contains("\nCOMMIT\n"),
            "{v4}"
        );
        assert!(
            v4.contains(&format!(
                "-A INPUT -s 198.51.100.7/32 -p tcp -m tcp --dport 22 {tag} -j ACCEPT\n"
            )),
            "{v4}"
        );
        assert!(!v4.contains("192.0.2.5"), "{v4}");
        assert!(v4.contains(&format!("--dport 22 {tag} -j DROP\n")), "{v4}");
        let v6 = std::fs::read_to_string(&v6file).expect("rules.v6");
        assert!(v6.contains(&format!("--dport 22 {tag} -j DROP\n")), "{v6}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn iptables_without_a_saved_ruleset_says_the_rules_are_not_kept() {
        let body =
            r#"echo "== run"; sh "$FW" 192.0.2.5; echo "== v4"; iptables -S INPUT; echo "== end""#;
        let (out, dir) = in_netns("ipt-nokeep", IPT, &[], body);
        assert_eq!(
            section(&out, "run"),
            [
                "iptables: 22/tcp from 192.0.2.5 (not kept: no /etc/iptables/rules.v4 (iptables-persistent) or /etc/sysconfig/iptables (iptables-services))"
            ],
            "{out}"
        );
        assert!(
            section(&out, "v4").contains(
                &"-A INPUT -s 192.0.2.5/32 -p tcp -m tcp --dport 22 -m comment --comment reimage-ssh -j ACCEPT"
            ),
            "{out}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn iptables_services_rules_are_kept_in_etc_sysconfig() {
        let body = r#"echo "== run"; sh "$FW" 192.0.2.5; echo "== end""#;
        let (out, dir) = in_netns("ipt-rhel", IPT, &[("etc/sysconfig/iptables", "")], body);
        let file = dir.join("root/etc/sysconfig/iptables");
        assert_eq!(
            section(&out, "run"),
            [format!(
                "iptables: 22/tcp from 192.0.2.5 (kept in {})",
                file.display()
            )],
            "{out}"
        );
        let saved = std::fs::read_to_string(&file).expect("saved");
        assert!(saved.contains("-s 192.0.2.5/32"), "{saved}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nftables_for_real_opens_ssh_to_the_sources_and_the_boot_config_loads_the_same() {
        // The real nft in a namespace of its own, with Debian's default
        // layout (inet filter, input policy drop) plus an open SSH rule, in
        // the ruleset and in /etc/nftables.conf; then the conf is loaded
        // again as nftables.service does at boot.
        let conf = "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif \"lo\" accept\n\t\ttcp dport 22 accept\n\t}\n}\n";
        let body = r#"
nft -f "$ROOT/etc/nftables.conf"
echo "== first"; sh "$FW" 192.0.2.5 2001:db8::1 @peer
echo "== second"; sh "$FW" 192.0.2.5 2001:db8::1 @peer
echo "== live"; nft list chain inet filter input
nft -f "$ROOT/etc/nftables.conf"
echo "== boot"; nft list chain inet filter input
echo "== end"
"#;
        let root_conf = "etc/nftables.conf";
        // iptables is there too (no saved rules files): nftables' branch.
        let tools = [IPT, &["nft"]].concat();
        let (out, dir) = in_netns("nft", &tools, &[(root_conf, conf)], body);
        let conf_path = dir.join("root").join(root_conf);
        assert_eq!(
            section(&out, "first"),
            [format!(
                "nftables: 22/tcp from 192.0.2.5 2001:db8::1 10.0.2.2 (kept in {})",
                conf_path.display()
            )],
            "{out}"
        );
        let rules = |name: &str| -> Vec<String> {
            section(&out, name)
                .iter()
                .map(|l| l.trim().to_string())
                .filter(|l| l.contains("dport"))
                .collect()
        };
        let want = [
            "ip saddr 10.0.2.2 tcp dport 22 accept comment \"reimage-ssh\"",
            "ip6 saddr 2001:db8::1 tcp dport 22 accept comment \"reimage-ssh\"",
            "ip saddr 192.0.2.5 tcp dport 22 accept comment \"reimage-ssh\"",
            "tcp dport 22 drop comment \"reimage-ssh\"",
        ];
        // Twice run, once there; the open rule gone; the boot's the same.
        assert_eq!(rules("live"), want, "{out}");
        assert_eq!(rules("boot"), want, "{out}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stand-in for nft(8) with one table, `inet filter`, whose input
    /// chain holds the rules in `chain`: it prints what `list chains` and
    /// `-a list chain` print (the formats of nftables 1.0 on Debian 12),
    /// logs the commands `-f /dev/stdin` reads, and accepts `-c -f FILE`.
    const STUB_NFT: &str = r#"#!/bin/sh
case "$*" in
"list chains") printf 'table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t}\n}\n' ;;
"-a list chain inet filter input") printf 'table inet filter {\n\tchain input { # handle 1\n\t\ttype filter hook input priority filter; policy drop;\n'; cat "$(dirname "$0")/chain"; printf '\t}\n}\n' ;;
"-f /dev/stdin") cat >> "$(dirname "$0")/log" ;;
"-c -f "*) exit 0 ;;
*) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#;

    /// Runs FIREWALL with `args` against STUB_NFT and a root holding
    /// `conf` as /etc/nftables.conf; the nft commands and the new conf.
    fn run_with_stub_nft(args: &[&str], chain: &str, conf: &str) -> (String, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("reimage-nft-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).expect("temp dir");
        std::fs::create_dir_all(dir.join("root/etc")).expect("temp dir");
        let stub = dir.join("bin/nft");
        std::fs::write(&stub, STUB_NFT).expect("stub");
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.join("bin/chain"), chain).expect("chain");
        std::fs::write(dir.join("root/etc/nftables.conf"), conf).expect("conf");
        let argv = sh(FIREWALL, args);
        let out = std::process::Command::new("/bin/sh")
            .args(&argv[1..])
            .env(
                "PATH",
                format!("{}:/bin:/usr/bin", dir.join("bin").display()),
            )
            .env("REIMAGE_ROOT", dir.join("root"))
            .env("SSH_CLIENT", "10.0.2.2 40000 22")
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!(
                "nftables: 22/tcp from 192.0.2.5 2001:db8::1 10.0.2.2 (kept in {}/root/etc/nftables.conf)",
                dir.display()
            )
        );
        let log = std::fs::read_to_string(dir.join("bin/log")).unwrap_or_default();
        let conf = std::fs::read_to_string(dir.join("root/etc/nftables.conf")).expect("conf");
        let _ = std::fs::remove_dir_all(&dir);
        (log, conf)
    }

    #[test]
    fn nftables_opens_ssh_to_the_sources_only_in_every_input_chain_and_its_config() {
        let image_conf = "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif \"lo\" accept\n\t\ttcp dport 22 accept\n\t}\n}\n";
        let chain = "\t\tiif \"lo\" accept # handle 4\n\t\ttcp dport 22 accept # handle 5\n";
        let args = ["192.0.2.5", "2001:db8::1", "@peer"];
        let (log, conf) = run_with_stub_nft(&args, chain, image_conf);
        let cmds: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
        let tag = "comment \"reimage-ssh\"";
        assert_eq!(
            cmds,
            [
                // The image's rule that let SSH in from anywhere goes.
                "delete rule inet filter input handle 5".to_string(),
                format!("add rule inet filter input tcp dport 22 drop {tag}"),
                format!(
                    "insert rule inet filter input ip saddr 192.0.2.5 tcp dport 22 accept {tag}"
                ),
                format!(
                    "insert rule inet filter input ip6 saddr 2001:db8::1 tcp dport 22 accept {tag}"
                ),
                format!(
                    "insert rule inet filter input ip saddr 10.0.2.2 tcp dport 22 accept {tag}"
                ),
            ],
            "{log}"
        );
        // Only the input hook's chain, not output.
        assert!(!log.contains("output"), "{log}");
        assert!(
            conf.contains("# reimage-ssh: \t\ttcp dport 22 accept\n"),
            "{conf}"
        );
        assert!(conf.contains("\t\tiif \"lo\" accept\n"), "{conf}");
        assert!(
            conf.ends_with(&format!(
                "# reimage-ssh begin\n{}\n# reimage-ssh end\n",
                cmds[1..].join("\n")
            )),
            "{conf}"
        );

        // A rerun finds its own rules: they go, and come back once; the
        // config keeps one block.
        let chain2 = format!(
            "\t\tip saddr 10.0.2.2 tcp dport 22 accept {tag} # handle 9\n\t\tiif \"lo\" accept # handle 4\n\t\ttcp dport 22 drop {tag} # handle 8\n"
        );
        let (log2, conf2) = run_with_stub_nft(&args, &chain2, &conf);
        assert!(
            log2.starts_with(
                "delete rule inet filter input handle 9\ndelete rule inet filter input handle 8\n"
            ),
            "{log2}"
        );
        assert_eq!(log2.matches("add rule").count(), 1, "{log2}");
        assert_eq!(conf2, conf);
    }
}
