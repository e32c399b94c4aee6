//! Linux first-boot configuration: hostname, sshd enabled, firewall open
//! for SSH, the post-load marker, then the image's own scripts. Each action
//! is idempotent and tolerates what a small image lacks (no systemd, no
//! firewall), saying so in its event.

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

const FIREWALL: &str = r#"if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
  firewall-cmd --permanent --add-service=ssh >/dev/null && firewall-cmd --reload >/dev/null && echo "firewalld: ssh allowed"
elif command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q "Status: active"; then
  ufw allow 22/tcp >/dev/null && echo "ufw: 22/tcp allowed"
elif command -v iptables >/dev/null 2>&1 && iptables -S INPUT >/dev/null 2>&1; then
  iptables -C INPUT -p tcp --dport 22 -j ACCEPT 2>/dev/null || iptables -I INPUT -p tcp --dport 22 -j ACCEPT
  echo "iptables: 22/tcp accepted"
else
  echo "no firewall found: nothing to open"
fi"#;

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
    _state: &crate::state::StateDir,
    report: &Reporter,
) -> Result<(), Outcome> {
    let mut a = Actions::new(plan, attempt, ch, report);
    let name = plan.computer.name.as_str();
    // A hostname or unit that cannot be set will not be fixed by a reload
    // of the same image.
    a.run("set-hostname", &sh(HOSTNAME, &[name]), Outcome::Fatal)?;
    a.run("enable-sshd", &sh(SSHD, &[]), Outcome::Fatal)?;
    a.run("open-firewall", &sh(FIREWALL, &[]), Outcome::Fatal)?;
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
    a.scripts("/var/lib/reimage/scripts", '/', |p| vec![p.to_string()])
}
