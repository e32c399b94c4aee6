//! The plan as `reimage check COMPUTER --image IMAGE` prints it, section
//! by section.

use std::time::Duration;

use super::model::ChannelKind;
use super::network::Addressing;
use super::plan::Plan;
use super::step::{Probe, Step, Wait};
use crate::duration::fmt;

/// What the OS module says of a plan for `check`, as the provisioner's
/// lines say what it will do.
#[derive(Debug, Clone, Default)]
pub struct OsLines {
    /// About the channel beyond the login (an SSH channel's host keys).
    pub channel: Vec<String>,
    /// What the first boot does, one line each.
    pub first_boot: Vec<String>,
}

impl Plan {
    /// The computer, the image, the attempts, the provisioner (with
    /// `provisioner` lines its module wrote), the OS profile, every wait
    /// step with its timeout at each attempt, the checks, and the first
    /// boot (with the lines the OS module wrote).
    pub fn describe(&self, provisioner: &[String], os: &OsLines) -> String {
        let mut v = self.describe_target(provisioner);
        v.extend(self.describe_profile(&os.channel));
        v.extend(self.describe_steps());
        v.extend(self.describe_checks());
        v.extend(self.describe_first_boot(&os.first_boot));
        v.iter().map(|l| format!("{l}\n")).collect()
    }

    /// What gets loaded where, how often, by which provisioner.
    fn describe_target(&self, provisioner: &[String]) -> Vec<String> {
        let mut v = vec![format!(
            "computer: {} (address {}, node {})",
            self.computer.name, self.computer.address, self.computer.node
        )];
        v.extend(self.describe_interfaces());
        v.extend([
            format!("image: {} (source {})", self.image.name, self.image.source),
            format!(
                "attempts: {} (timeouts grow x{} per attempt)",
                self.max_attempts, self.growth
            ),
            format!(
                "provisioner: {} (kind {})",
                self.provisioner.name, self.provisioner.kind
            ),
        ]);
        v.extend(provisioner.iter().map(|d| format!("  {d}")));
        v
    }

    /// The two interfaces: the private one (the channel and the lockdown)
    /// and the public one, with its addressing.
    fn describe_interfaces(&self) -> Vec<String> {
        let c = &self.computer;
        let Some(p) = &c.public else {
            return match &c.mac {
                Some(m) => vec![format!("  interface: mac {m} (one network)")],
                None => Vec::new(),
            };
        };
        let private = match &c.mac {
            Some(m) => format!("mac {m}"),
            None => "mac as the hardware has it (no `mac`)".to_string(),
        };
        let public = match &p.addressing {
            Addressing::Dhcp => "DHCP (renewed at first boot)".to_string(),
            Addressing::Static(s) => {
                let mut t = format!("static {} (mask {})", s.cidr(), s.netmask());
                if let Some(g) = s.gateway {
                    t.push_str(&format!(", gateway {g}"));
                }
                if !s.dns.is_empty() {
                    let d: Vec<String> = s.dns.iter().map(|d| d.to_string()).collect();
                    t.push_str(&format!(", dns {}", d.join(" ")));
                }
                t
            }
        };
        vec![
            format!(
                "  private interface: {private}; the channel to {} and the lockdown",
                c.address
            ),
            format!("  public interface: mac {}; {public}", p.mac),
        ]
    }

    /// The port a step probes: its own, else the channel's.
    fn port_text(&self, own: Option<u16>) -> String {
        own.or(self.port())
            .map_or("none".to_string(), |p| p.to_string())
    }

    /// The profile, its family and channel, the login (and `channel`
    /// lines the OS module wrote).
    fn describe_profile(&self, channel: &[String]) -> Vec<String> {
        let p = &self.profile;
        let mut v = vec![format!(
            "os profile: {} (family {}, channel {})",
            p.name,
            p.family.name(),
            p.channel.kind().name()
        )];
        if let Some(user) = p.channel.user() {
            v.push(format!(
                "  login: {user}@{}:{}",
                self.computer.address,
                self.port_text(None)
            ));
        }
        v.extend(channel.iter().map(|l| format!("  {l}")));
        let img = &self.image.config;
        if img.sysprep.is_some() || img.r#virtual {
            let sysprep = match img.sysprep {
                Some(b) => b.to_string(),
                None => "the family's default".to_string(),
            };
            v.push(format!(
                "  image: sysprep={sysprep} virtual={}",
                img.r#virtual
            ));
        }
        v
    }

    /// The wait sequence, a step a line, and the port probes' pace.
    fn describe_steps(&self) -> Vec<String> {
        let p = &self.profile;
        let mut v = vec!["  wait sequence (timeout at attempt 1..n):".to_string()];
        for (i, st) in p.steps.iter().enumerate() {
            v.push(self.describe_step(i, st));
        }
        let probes_ports = p.steps.iter().any(|s| {
            matches!(
                s.wait,
                Wait::Poll(Probe::Port { .. } | Probe::Banner { .. }, _)
            )
        });
        if probes_ports {
            let per_min = (60.0 / p.probe_interval.as_secs_f64()).round();
            v.push(format!(
                "  port probes: every {} while the target answers ({per_min} a minute; probe_interval), pauses doubling to {} while it is silent",
                fmt(p.probe_interval),
                fmt(p.probe_interval.max(Duration::from_secs(2)))
            ));
        }
        v
    }

    /// Step `i`: what it waits for, and its limits at every attempt.
    fn describe_step(&self, i: usize, st: &Step) -> String {
        let at = |d: Duration| self.per_attempt(d);
        let mut d = format!("    {}. {} [{}]", i + 1, st.name, st.kind().name());
        let (probe, limits) = match &st.wait {
            // A sleep does not grow with the attempt (not a timeout).
            Wait::Sleep(t) => return d + &format!(": {} (every attempt)", fmt(*t)),
            Wait::Poll(probe, limits) => (probe, limits),
        };
        match probe {
            Probe::Port { port } => d.push_str(&format!(" port {}", self.port_text(*port))),
            Probe::Banner { port, regex } => {
                d.push_str(&format!(" port {} /{regex}/", self.port_text(*port)))
            }
            Probe::Command { command, regex } => {
                d.push_str(&format!(" `{}`", command.join(" ")));
                if let Some(r) = regex {
                    d.push_str(&format!(" /{r}/"));
                }
            }
            Probe::Reboot {
                trigger: Some(command),
            } => d.push_str(&format!(" `{}`", command.join(" "))),
            Probe::Ping | Probe::Login | Probe::SetupDone | Probe::Reboot { trigger: None } => {}
        }
        d.push_str(&format!(": timeout {}", at(limits.timeout)));
        if let Some(stall) = limits.stall {
            d.push_str(&format!("; stall {}", at(stall)));
        }
        if let Some(r) = limits.reset_wait(probe) {
            d.push_str(&format!("; on timeout: power reset, then {}", at(r)));
        }
        d
    }

    /// The stability window, the image check, the boot-id check.
    fn describe_checks(&self) -> Vec<String> {
        let p = &self.profile;
        vec![
            format!("  stable for: {}", fmt(p.stable_for)),
            match &self.image.config.image_check {
                Some(c) => format!(
                    "  image check: `{}` must match /{}/",
                    c.command.join(" "),
                    c.expect
                ),
                None => "  image check: none".into(),
            },
            format!(
                "  boot id check: {}",
                if p.channel.kind() == ChannelKind::None {
                    "no (channel none)"
                } else {
                    "yes, when the old OS answers before the load"
                }
            ),
        ]
    }

    /// Whether the first boot runs and what it does, then the image's
    /// post-load scripts.
    fn describe_first_boot(&self, first_boot: &[String]) -> Vec<String> {
        let runs = self.profile.first_boot;
        let mut v = vec![format!("  first boot: {}", if runs { "yes" } else { "no" })];
        if runs {
            v.extend(first_boot.iter().map(|l| format!("    {l}")));
        }
        let scripts = &self.image.config.post_load;
        if !scripts.is_empty() {
            let s: Vec<String> = scripts.iter().map(|p| p.display().to_string()).collect();
            v.push(format!("  post-load scripts: {}", s.join(", ")));
        }
        v
    }
}
