//! Linux over SSH: everything reimage knows of Linux is in this folder.
//!
//! - this file: the family (its defaults, wait sequence and keys, the
//!   boot id, what `check` says the first boot does);
//! - `first_boot`: the first configuration, with its shell programs as
//!   files of this folder (`*.sh`, linted by shellcheck in CI);
//! - `access`: `grant` and `revoke` (a reservation's user, its way in).

mod access;
#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod bind_tests;
#[cfg(test)]
mod firewalld_ufw_tests;
mod first_boot;
#[cfg(test)]
mod tests;

use std::time::Duration;

use regex::Regex;

use super::actions::Actions;
use super::sequence::Sequence;
use super::{Family, keys};
use crate::config::{
    ChannelKind, ComputerConfig, FamilyRules, ImageConfig, KeyError, OsConfig, Plan, Probe, Step,
    WaitKind,
};
use crate::outcome::Outcome;
use crate::state::StateDir;

/// The linux family.
pub struct Linux;

impl FamilyRules for Linux {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn default_channel(&self) -> ChannelKind {
        ChannelKind::Ssh
    }

    fn default_user(&self) -> &'static str {
        first_boot::ROOT.name
    }

    fn default_stable_for(&self) -> Duration {
        Duration::ZERO
    }

    fn first_boot_by_default(&self) -> bool {
        true
    }

    /// VCL's Linux.pm post_load waits 600 s for SSH (port and login in
    /// one, wait_for_response(5, 600, 5)). reimage gives the port those
    /// 600 s and, once it answers, the banner and the login 1 min each: an
    /// sshd that accepts connections answers both within seconds (a
    /// deviation, in the man page).
    fn steps(&self, _image: &ImageConfig) -> Vec<Step> {
        let minute = Duration::from_secs(60);
        vec![
            Step::poll(Probe::Port { port: None }, 10 * minute),
            Step::poll(
                Probe::Banner {
                    port: None,
                    regex: Regex::new("^SSH-").expect("a valid regex"),
                },
                minute,
            ),
            Step::poll(Probe::Login, minute),
        ]
    }

    fn check_wait(&self, profile: &str, kind: WaitKind) -> Result<(), String> {
        keys::refuse_setup_done(self, profile, kind)
    }

    fn check_keys(&self, profile: &str, os: &OsConfig) -> Result<(), KeyError> {
        keys::check_shared(profile, os)?;
        keys::refuse_windows_keys(profile, os)
    }

    /// `static_address` names an interface by name and `renew_dhcp` renews
    /// every lease: Windows' first boot does both with netsh and ipconfig.
    /// On Linux the public interface is found by its MAC instead
    /// (`public_mac`, with `public_address` or DHCP), so these two are
    /// refused rather than ignored.
    fn check_computer(&self, name: &str, comp: &ComputerConfig) -> Result<(), KeyError> {
        let (key, what) = if comp.static_address.is_some() {
            ("static_address", "a static address")
        } else if comp.renew_dhcp {
            ("renew_dhcp", "a DHCP lease")
        } else {
            return Ok(());
        };
        Err(KeyError::new(
            &["computers", name, key],
            format!(
                "computer `{name}`: `{key}` is for Windows images; the Linux first boot gives the public interface {what} by its MAC: set public_mac = \"..\" (and public_address = \"A.B.C.D/N\" for a static one; DHCP without it) instead of `{key}`"
            ),
        ))
    }
}

impl Family for Linux {
    fn boot_id_command(&self) -> Vec<String> {
        vec!["cat".into(), "/proc/sys/kernel/random/boot_id".into()]
    }

    fn first_boot_lines(&self, plan: &Plan) -> Vec<String> {
        let p = &plan.profile;
        let from = if p.allow_from.is_empty() {
            "the management node's own address toward the computer and the address the computer sees the SSH connection come from".to_string()
        } else {
            p.allow_from.join(", ")
        };
        let on = match first_boot::private_interface(plan) {
            None => String::new(),
            Some(p) if p == "@peer" => {
                " on the private interface (the one the SSH connection comes in on)".to_string()
            }
            Some(mac) => format!(" on the private interface (MAC {mac})"),
        };
        let mut v = vec![
            format!("lockdown: SSH (TCP 22) open only from {from}{on}; ping as the image has it"),
            super::first_boot::password_line(plan, first_boot::ROOT, None),
            "scrub: private keys under /root/.ssh removed".to_string(),
        ];
        if let Some(n) = &plan.computer.public {
            v.push(format!(
                "public network: the interface with MAC {} configured through systemd-networkd, NetworkManager or ifupdown (whichever the image runs); its address reported",
                n.mac
            ));
        }
        v.extend(super::first_boot::time_line(plan));
        v
    }

    fn first_boot(&self, seq: &mut Sequence, state: &StateDir) -> Result<(), Outcome> {
        first_boot::run(seq.plan, seq.attempt, seq.channel, state, seq.report)
    }

    fn way_in(&self) -> Option<crate::os::WayIn> {
        Some(access::WAY_IN)
    }

    fn grant(&self, a: &mut Actions, r: &crate::os::Request) -> Result<(), Outcome> {
        access::grant(a, r)
    }

    fn revoke(&self, a: &mut Actions, user: &str) -> Result<(), Outcome> {
        access::revoke(a, user)
    }
}
