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
/// iptables/ip6tables (ACCEPT from each source, then DROP for the rest).
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
elif command -v nft >/dev/null 2>&1 && chains=$(nft list chains 2>/dev/null | awk '
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
  iptables -D INPUT -p tcp --dport 22 -j ACCEPT 2>/dev/null
  for c in "$@"; do
    t=iptables; [ "$(fam "$c")" = ipv6 ] && t=ip6tables
    $t -C INPUT -p tcp -s "$c" --dport 22 -j ACCEPT 2>/dev/null || $t -I INPUT -p tcp -s "$c" --dport 22 -j ACCEPT || exit 1
  done
  for t in iptables ip6tables; do
    command -v $t >/dev/null 2>&1 || continue
    $t -C INPUT -p tcp --dport 22 -j DROP 2>/dev/null || $t -A INPUT -p tcp --dport 22 -j DROP
  done
  echo "iptables: 22/tcp from $*"
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

    /// Runs `script` with `args` under sh, with PATH holding only a stub
    /// iptables that logs its arguments (and no firewalld or ufw).
    fn run_with_stub_iptables(script: &str, args: &[&str], ssh_client: &str) -> String {
        let dir = std::env::temp_dir().join(format!("reimage-fw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("log");
        let stub = dir.join("iptables");
        std::fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n[ \"$1\" = -C ] && exit 1\nexit 0\n",
                log.display()
            ),
        )
        .expect("stub");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let argv = sh(script, args);
        let out = std::process::Command::new("/bin/sh")
            .args(&argv[1..])
            .env("PATH", format!("{}:/bin:/usr/bin", dir.display()))
            .env("SSH_CLIENT", ssh_client)
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        text
    }

    #[test]
    fn ssh_is_opened_to_the_sources_and_the_peer_then_dropped() {
        let log = run_with_stub_iptables(FIREWALL, &["192.0.2.5", "@peer"], "10.0.2.2 40000 22");
        let lines: Vec<&str> = log.lines().collect();
        assert!(
            lines.contains(&"-I INPUT -p tcp -s 192.0.2.5 --dport 22 -j ACCEPT"),
            "{log}"
        );
        // Behind QEMU's NAT the computer sees the connection from 10.0.2.2.
        assert!(
            lines.contains(&"-I INPUT -p tcp -s 10.0.2.2 --dport 22 -j ACCEPT"),
            "{log}"
        );
        assert!(
            lines.contains(&"-A INPUT -p tcp --dport 22 -j DROP"),
            "{log}"
        );
        assert!(
            lines.contains(&"-D INPUT -p tcp --dport 22 -j ACCEPT"),
            "{log}"
        );
        assert!(!log.contains("@peer"), "{log}");
        // No SSH_CLIENT (not over SSH): @peer adds nothing.
        let log = run_with_stub_iptables(FIREWALL, &["192.0.2.5", "@peer"], "");
        assert_eq!(log.matches("-I INPUT").count(), 1, "{log}");
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
