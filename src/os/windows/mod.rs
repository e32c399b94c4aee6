//! Windows, from XP/2003 to 11/2022, over WinRM (or SSH where the image
//! runs an SSH server), after Apache VCL's Windows modules (Windows.pm,
//! Version_5.pm, Version_6.pm): everything reimage knows of Windows is in
//! this folder.
//!
//! - this file: the family in its three versions (their defaults, wait
//!   sequences and timings, the keys they take, what `check` says the first
//!   boot does) and the before-load (leaving the domain);
//! - [`commands`]: which Windows ([`Windows`]), the command lines each
//!   version's stock install runs and what their output means (a leaf:
//!   it imports nothing of this folder), with the scripts of this folder
//!   (`*.vbs`, `*.ps1`);
//! - `first_boot`: the first configuration, as named steps;
//! - `access`: `grant` and `revoke` (a reservation's user, its way in).

mod access;
mod activation;
pub mod commands;
mod domain;
mod first_boot;
mod network;

use std::time::Duration;

use super::first_boot::{password_line, time_line};
use super::sequence::Sequence;
use super::{Family, keys};
use crate::config::{
    ActivationValue, ChannelKind, FamilyRules, ImageConfig, KeyError, OsConfig, Plan, Probe, Step,
    StepLimits, Wait, WaitKind,
};
use crate::control::Channel;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::state::StateDir;
pub use commands::Windows;
use commands::{domain_query, joined_domain, unjoin_command, wmi_result};
use first_boot::ADMINISTRATOR;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

impl Windows {
    /// The timings as Apache VCL's modules have them: (initial wait,
    /// response timeout, power-reset extra wait).
    fn timing(self, image: &ImageConfig) -> (Duration, Duration, Option<Duration>) {
        match self {
            // XP/2003: VCL's Windows.pm post_load waits 15 s, then up to
            // 900 s (wait_for_response(15, 900, 8)); Version_5.pm has no
            // power reset.
            Windows::V5 => (secs(15), mins(15), None),
            // Vista and later: Version_6.pm wait_for_response: a VM 5 s /
            // 300 s, a Sysprep image 60 s / 1800 s, else 15 s / 600 s; when
            // that fails and the provisioner can, power reset and 600 s
            // more. VCL's Version_10 modules inherit it unchanged, and so
            // does windows-10.
            _ if image.r#virtual => (secs(5), mins(5), Some(mins(10))),
            _ if self.sysprep(image) => (secs(60), mins(30), Some(mins(10))),
            _ => (secs(15), mins(10), Some(mins(10))),
        }
    }

    /// Whether `image` was generalized with Sysprep: as it says, else
    /// true for windows-6 and windows-10 (VCL's imagemeta default,
    /// sysprep = 1) and false for XP/2003 (no setup state to wait on by
    /// default there).
    fn sysprep(self, image: &ImageConfig) -> bool {
        image.sysprep.unwrap_or(self != Windows::V5)
    }

    /// Activation and domain: KMS hosts and a MAK file (not on XP/2003),
    /// the activation mode, a domain and OU that command lines take as they
    /// are, DNS servers that are addresses.
    fn check_windows_keys(self, os: &OsConfig) -> Result<(), KeyError> {
        check_activation(os)?;
        let wants = os.kms_hosts.as_ref().is_some_and(|k| !k.is_empty()) || os.mak_file.is_some();
        if wants && self == Windows::V5 {
            return Err(KeyError::at(
                if os.mak_file.is_some() {
                    "mak_file"
                } else {
                    "kms_hosts"
                },
                "Windows XP/2003 has no KMS or MAK activation through slmgr: remove it",
            ));
        }
        for (i, a) in os.domain_dns.iter().flatten().enumerate() {
            if a.parse::<std::net::IpAddr>().is_err() {
                return Err(KeyError {
                    path: vec!["domain_dns".into(), i.to_string()],
                    message: format!("DNS server `{a}` is not an IP address"),
                });
            }
        }
        if os.domain_dns.as_ref().is_some_and(|d| !d.is_empty()) && os.domain.is_none() {
            return Err(KeyError::at(
                "domain_dns",
                "`domain_dns` is set before a domain join: name the `domain` too",
            ));
        }
        let Some(d) = &os.domain else {
            return Ok(());
        };
        if !keys::plain_host(&d.name) {
            return Err(KeyError {
                path: vec!["domain".into(), "name".into()],
                message: format!("domain `{}` is not a DNS name", d.name),
            });
        }
        let bad = |s: &str| {
            s.chars()
                .any(|c| matches!(c, '"' | '\'' | '%' | '&' | '|' | '<' | '>' | '^'))
        };
        if d.ou.as_deref().is_some_and(bad) {
            return Err(KeyError {
                path: vec!["domain".into(), "ou".into()],
                message: "the OU may not hold quotes, %, &, |, <, > or ^".into(),
            });
        }
        Ok(())
    }
}

/// `activation` is a mode (the old table form names the keys that
/// replaced it), `required` has something to try, every KMS host is a host
/// name or address.
fn check_activation(os: &OsConfig) -> Result<(), KeyError> {
    let hosts = os.kms_hosts.as_deref().unwrap_or_default();
    match &os.activation {
        Some(ActivationValue::Table(_)) => {
            return Err(KeyError::at(
                "activation",
                "the table form moved: write `kms_hosts = [\"HOST[:PORT]\", ...]` and/or \
                 `mak_file = \"FILE\"`, and `activation = \"required\"` to fail a load that \
                 cannot activate",
            ));
        }
        Some(ActivationValue::Mode(m)) if !ACTIVATION_MODES.contains(&m.as_str()) => {
            return Err(KeyError::at(
                "activation",
                format!(
                    "unknown activation `{m}`: use {}",
                    ACTIVATION_MODES.join(", ")
                ),
            ));
        }
        Some(ActivationValue::Mode(m))
            if m == "required" && hosts.is_empty() && os.mak_file.is_none() =>
        {
            return Err(KeyError::at(
                "activation",
                "`required` needs something to activate with: `kms_hosts` or `mak_file`",
            ));
        }
        _ => {}
    }
    for (i, h) in hosts.iter().enumerate() {
        if !keys::plain_host(h) {
            return Err(KeyError {
                path: vec!["kms_hosts".into(), i.to_string()],
                message: format!("KMS host `{h}` is not a host name or address"),
            });
        }
    }
    Ok(())
}

/// The values `activation` takes.
const ACTIVATION_MODES: [&str; 3] = ["best-effort", "required", "off"];

impl FamilyRules for Windows {
    fn name(&self) -> &'static str {
        match self {
            Windows::V5 => "windows-5",
            Windows::V6 => "windows-6",
            Windows::V10 => "windows-10",
        }
    }

    fn default_channel(&self) -> ChannelKind {
        ChannelKind::Winrm
    }

    fn default_user(&self) -> &'static str {
        ADMINISTRATOR.name
    }

    fn default_stable_for(&self) -> Duration {
        secs(30)
    }

    fn first_boot_by_default(&self) -> bool {
        true
    }

    /// An initial wait, the channel's port (with a power reset where VCL
    /// has one), on a Sysprep image Windows' own word that setup is
    /// complete, then the login.
    fn steps(&self, image: &ImageConfig) -> Vec<Step> {
        let (initial, response, reset) = self.timing(image);
        let sleep = Step {
            name: "initial-wait".into(),
            wait: Wait::Sleep(initial),
        };
        let port = Step {
            name: "response".into(),
            wait: Wait::Poll(
                Probe::Port { port: None },
                StepLimits {
                    reset_on_timeout: reset,
                    ..StepLimits::timeout(response)
                },
            ),
        };
        let mut steps = vec![sleep, port];
        if self.sysprep(image) {
            // Sysprep reboots between its passes and WinRM may answer
            // before, between or after them: Windows itself says when
            // setup is complete. Within the response timeout (VCL has one
            // wait for all of it).
            steps.push(Step::poll(Probe::SetupDone, response).named("sysprep-done"));
        }
        steps.push(Step::poll(Probe::Login, mins(5)));
        steps
    }

    fn check_wait(&self, _profile: &str, _kind: WaitKind) -> Result<(), String> {
        Ok(())
    }

    fn check_keys(&self, profile: &str, os: &OsConfig) -> Result<(), KeyError> {
        keys::check_shared(profile, os)?;
        self.check_windows_keys(os)
    }
}

/// The most characters of a computer name Windows keeps (its NetBIOS
/// name, MAX_COMPUTERNAME_LENGTH).
const NETBIOS_LEN: usize = 15;

/// The name Windows keeps for computer `name`: its first 15 characters.
pub fn netbios_name(name: &str) -> String {
    name.chars().take(NETBIOS_LEN).collect()
}

/// Why Windows refuses computer name `name`, if it does: Rename-Computer
/// takes letters, digits and hyphens, not all digits, up to 63 characters
/// (no periods or underscores), as Microsoft's "Naming conventions in
/// Active Directory for computers, domains, sites, and OUs" says; and its
/// 15-character NetBIOS form must not end in a hyphen.
pub(super) fn refused_name(name: &str) -> Option<String> {
    let bad: Vec<char> = name
        .chars()
        .filter(|c| !c.is_ascii_alphanumeric() && *c != '-')
        .collect();
    if !bad.is_empty() {
        return Some(format!(
            "Windows refuses computer name `{name}`: it holds {}; a Windows computer name takes letters, digits and hyphens only (no periods or underscores): rename the computer's table",
            bad.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Some(format!(
            "Windows refuses computer name `{name}`: a computer name may not be all digits"
        ));
    }
    let netbios = netbios_name(name);
    if netbios.ends_with('-') {
        return Some(format!(
            "Windows would keep `{netbios}` of computer name `{name}` (15 characters), and a name may not end in a hyphen: shorten the name"
        ));
    }
    None
}

impl Family for Windows {
    fn boot_id_command(&self) -> Vec<String> {
        commands::boot_id_command(*self)
    }

    fn boot_id_from(&self, stdout: &str) -> Option<String> {
        commands::boot_id_from(*self, stdout)
    }

    fn setup_state_command(&self) -> Option<Vec<String>> {
        Some(commands::setup_state_command(*self))
    }

    fn setup_state(&self, stdout: &str) -> Result<String, String> {
        commands::setup_state(*self, stdout)
    }

    fn account(&self) -> Option<crate::os::first_boot::Account> {
        Some(first_boot::ADMINISTRATOR)
    }

    fn before_load(&self, plan: &Plan, ch: &mut dyn Channel, report: &Reporter) {
        if plan.profile.first_boot {
            leave_domain(*self, plan, ch, report);
        }
    }

    fn first_boot_lines(&self, plan: &Plan) -> Vec<String> {
        let p = &plan.profile;
        let from = if p.allow_from.is_empty() {
            "the management node's own address toward the computer".to_string()
        } else {
            p.allow_from.join(", ")
        };
        let fixed = p.admin_password_file.as_deref();
        let mut v = vec![
            format!(
                "lockdown: RDP (TCP 3389) and ping open only from {from}; WinRM (TCP {}) from {}{}",
                plan.port().unwrap_or(5985),
                if p.allow_from.is_empty() {
                    "the management node only".to_string()
                } else {
                    format!("{} and the management node", p.allow_from.join(", "))
                },
                if plan.computer.public.is_some() {
                    "; on the private interface only (its addresses found at run time)"
                } else {
                    ""
                }
            ),
            password_line(plan, ADMINISTRATOR, fixed),
            "scrub: Sysprep/Panther/unattend answer files removed".to_string(),
            name_line(&plan.computer.name),
            "power: sleep and hibernation off".to_string(),
        ];
        v.extend(time_line(plan));
        v.extend(settings_lines(plan));
        v
    }

    fn vet(&self, plan: &Plan) -> Result<(), KeyError> {
        if !plan.profile.first_boot {
            return Ok(());
        }
        match refused_name(&plan.computer.name) {
            Some(why) => Err(KeyError::new(&["computers", &plan.computer.name], why)),
            None => Ok(()),
        }
    }

    fn first_boot(&self, seq: &mut Sequence, state: &StateDir) -> Result<(), Outcome> {
        first_boot::run(*self, seq, state)
    }

    fn way_in(&self) -> Option<crate::os::WayIn> {
        Some(access::WAY_IN)
    }

    fn grant(
        &self,
        a: &mut crate::os::actions::Actions,
        r: &crate::os::Request,
    ) -> Result<(), Outcome> {
        access::grant(*self, a, r)
    }

    fn revoke(&self, a: &mut crate::os::actions::Actions, user: &str) -> Result<(), Outcome> {
        access::revoke(*self, a, user)
    }

    fn revoke_all(
        &self,
        a: &mut crate::os::actions::Actions,
        r: &crate::os::Revoke,
    ) -> Result<(), Outcome> {
        access::revoke_all(*self, a, r)
    }
}

/// `check`'s lines for activation, the domain and the network.
fn settings_lines(plan: &Plan) -> Vec<String> {
    let p = &plan.profile;
    let mut v = Vec::new();
    if let Some(a) = &p.activation {
        v.push(activation::describe(a));
    }
    if let Some(d) = &p.domain {
        let dns = if p.domain_dns.is_empty() {
            String::new()
        } else {
            format!("DNS servers {} set, then ", p.domain_dns.join(", "))
        };
        v.push(format!(
            "domain: after the clock, {dns}join {}{} (credentials {}; another domain is left first); unjoin before a reload",
            d.name,
            d.ou.as_deref()
                .map(|o| format!(" in {o}"))
                .unwrap_or_default(),
            d.credentials_file.display()
        ));
    } else {
        v.push("domain: none; an image that is a member of one leaves it".to_string());
    }
    if plan.computer.renew_dhcp {
        v.push("network: DHCP lease renewed".to_string());
    }
    if let Some(n) = &plan.computer.public {
        v.push(format!(
            "network: interfaces found by MAC; the private one ignores default routes (Vista and later); the public one (MAC {}) {}; its address reported",
            n.mac,
            match &n.addressing {
                crate::config::network::Addressing::Dhcp => "by DHCP, renewed".to_string(),
                crate::config::network::Addressing::Static(s) => format!(
                    "static {}{}{}, the old default routes removed",
                    s.cidr(),
                    s.gateway.map(|g| format!(", gateway {g}")).unwrap_or_default(),
                    if s.dns.is_empty() {
                        String::new()
                    } else {
                        format!(", DNS {}", s.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" "))
                    }
                ),
            }
        ));
    }
    if let Some(s) = &plan.computer.static_address {
        v.push(format!(
            "network: {} on `{}`{}",
            s.address,
            s.interface,
            s.gateway
                .as_deref()
                .map(|g| format!(", gateway {g}"))
                .unwrap_or_default()
        ));
    }
    v
}

/// Before a reload: when the profile joins a domain and the old OS is a
/// member, leave the domain so no stale membership lingers (VCL's
/// Windows.pm pre_reload). Best effort: a computer that does not answer is
/// reloaded anyway.
fn leave_domain(w: Windows, plan: &Plan, ch: &mut dyn Channel, report: &Reporter) {
    let Some(d) = &plan.profile.domain else {
        return;
    };
    let t = plan.profile.command_timeout;
    report.step("unjoin-domain", Some(t));
    let joined = match ch.run(&domain_query(w), t) {
        Ok(o) => joined_domain(&o.stdout),
        Err(e) => {
            report.step_failed(&format!("cannot ask the old OS: {e}"));
            return;
        }
    };
    let Some(j) = joined else {
        report.step_done("not a domain member");
        return;
    };
    match ch.run(&unjoin_command(w), t) {
        Ok(o) => match wmi_result(&o) {
            Ok(_) => report.step_done(&format!("left {j} (configured: {})", d.name)),
            Err(why) => report.step_failed(&format!("could not leave {j}: {why}")),
        },
        Err(e) => report.step_failed(&format!("could not leave {j}: {e}")),
    }
}

/// `check`'s line for the name: what Windows keeps of a longer one.
fn name_line(name: &str) -> String {
    let netbios = netbios_name(name);
    if netbios.len() < name.len() {
        format!(
            "name: `{name}` is longer than Windows keeps ({NETBIOS_LEN} characters): renamed to its NetBIOS form {}, rebooted (a reboot that does not come back: power reset once), checked against that",
            netbios.to_ascii_uppercase()
        )
    } else {
        format!(
            "name: renamed to {name}, rebooted (a reboot that does not come back: power reset once), name checked"
        )
    }
}
