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
[ "$(hostname)" = "$name" ] && echo "hostname is $name""#;

const SSHD: &str = r#"if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for u in ssh.service sshd.service; do
    if systemctl list-unit-files "$u" 2>/dev/null | grep -q "^$u"; then
      systemctl enable "$u" >/dev/null 2>&1 && echo "$u enabled" && exit 0
    fi
  done
  echo "no ssh unit to enable"; exit 0
fi
echo "no systemd: sshd is started by the image's own init""#;

/// Opens SSH (TCP 22) only from the sources given as arguments: firewalld
/// (rich rules, the open `ssh` service removed), ufw (`allow from`, the
/// open rules deleted) or iptables/ip6tables (ACCEPT from each source, then
/// DROP for the rest). Ping is left to the image's firewall (in the man
/// page).
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
}
