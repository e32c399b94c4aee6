//! A wait step resolved from its `{ wait = "...", ... }` table: one variant
//! per wait kind with exactly that kind's settings, checked once when the
//! configuration loads, so the OS module only matches on it.

use regex::Regex;
use std::time::Duration;

use super::model::{StepConfig, WaitKind};

/// Timeout of a step that gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One step of a wait sequence.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name in events and `timeouts` (default: the wait kind).
    pub name: String,
    /// What it waits for.
    pub wait: Wait,
}

/// A sleep, or a probe polled until it answers or a limit runs out.
#[derive(Debug, Clone)]
pub enum Wait {
    /// Just wait this long (a wait the OS needs: it does not grow with the
    /// attempt).
    Sleep(Duration),
    /// Poll `probe` within these limits.
    Poll(Probe, StepLimits),
}

/// What a polling step waits for.
#[derive(Debug, Clone)]
pub enum Probe {
    /// ICMP echo answered (system `ping`).
    Ping,
    /// TCP connect succeeds; `None`: the channel's port.
    Port { port: Option<u16> },
    /// TCP connect and a first line matching `regex`; `None`: the
    /// channel's port.
    Banner { port: Option<u16>, regex: Regex },
    /// The channel authenticates (and the boot id changed since the load).
    Login,
    /// `command` over the channel until its output matches `regex`, or
    /// until it exits 0 without one.
    Command {
        command: Vec<String>,
        regex: Option<Regex>,
    },
    /// The computer goes down and comes back with a new boot id; `trigger`,
    /// if given, is run to start the reboot.
    Reboot { trigger: Option<Vec<String>> },
    /// Windows itself says setup is complete (ImageState, or XP's
    /// SystemSetupInProgress and MiniSetupInProgress); logs in as needed,
    /// a reboot in between is fine.
    SetupDone,
}

/// The limits of a polling step at attempt 1 (each grows with the attempt).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLimits {
    /// Give up after this long.
    pub timeout: Duration,
    /// Give up when what the step sees has not changed for this long.
    pub stall: Option<Duration>,
    /// On timeout, reset power (where the provisioner can) and wait this
    /// much longer. A reboot step resets without it too: see
    /// [`StepLimits::reset_wait`].
    pub reset_on_timeout: Option<Duration>,
}

/// How much longer than its own timeout a reboot step that names no
/// `reset_on_timeout` waits after its power reset: Apache VCL's OS.pm
/// `wait_for_reboot` (managementnode/lib/VCL/Module/OS.pm) power-resets
/// once when the first wait sees no reboot and then waits its total again
/// plus 120 s times the attempt number, 2: 240 s.
pub const REBOOT_RESET_MORE: Duration = Duration::from_secs(240);

impl StepLimits {
    /// Just a timeout.
    pub fn timeout(timeout: Duration) -> StepLimits {
        StepLimits {
            timeout,
            stall: None,
            reset_on_timeout: None,
        }
    }

    /// How long a step polling `probe` waits after a power reset on its
    /// timeout, at attempt 1 (it grows with the attempt); `None`: it does
    /// not reset. `reset_on_timeout` where the step names one; a reboot
    /// step resets in any case (a hung reboot is what VCL resets for) and
    /// then waits its timeout plus [`REBOOT_RESET_MORE`].
    pub fn reset_wait(&self, probe: &Probe) -> Option<Duration> {
        match (self.reset_on_timeout, probe) {
            (Some(d), _) => Some(d),
            (None, Probe::Reboot { .. }) => Some(self.timeout + REBOOT_RESET_MORE),
            (None, _) => None,
        }
    }
}

impl Probe {
    /// The kind in the config.
    pub fn kind(&self) -> WaitKind {
        match self {
            Probe::Ping => WaitKind::Ping,
            Probe::Port { .. } => WaitKind::Port,
            Probe::Banner { .. } => WaitKind::Banner,
            Probe::Login => WaitKind::Login,
            Probe::Command { .. } => WaitKind::Command,
            Probe::Reboot { .. } => WaitKind::Reboot,
            Probe::SetupDone => WaitKind::SetupDone,
        }
    }

    /// A port or banner step that names no port: it probes the channel's.
    pub fn takes_channel_port(&self) -> bool {
        matches!(
            self,
            Probe::Port { port: None } | Probe::Banner { port: None, .. }
        )
    }
}

impl Step {
    /// A polling step named after its kind.
    pub fn poll(probe: Probe, timeout: Duration) -> Step {
        Step {
            name: probe.kind().name().to_string(),
            wait: Wait::Poll(probe, StepLimits::timeout(timeout)),
        }
    }

    /// The wait `cloud_init = true` appends: `cloud-init status --wait`
    /// until it says done, 20 minutes.
    pub fn cloud_init() -> Step {
        Step::poll(
            Probe::Command {
                command: vec!["cloud-init".into(), "status".into(), "--wait".into()],
                regex: Some(Regex::new("status: done").expect("a valid regex")),
            },
            Duration::from_secs(20 * 60),
        )
        .named("cloud-init")
    }

    /// Renamed.
    pub fn named(mut self, name: &str) -> Step {
        self.name = name.to_string();
        self
    }

    /// The kind in the config.
    pub fn kind(&self) -> WaitKind {
        match &self.wait {
            Wait::Sleep(_) => WaitKind::Sleep,
            Wait::Poll(p, _) => p.kind(),
        }
    }

    /// Sets the timeout (a sleep's duration), as `timeouts = { .. }` does.
    pub fn set_timeout(&mut self, t: Duration) {
        match &mut self.wait {
            Wait::Sleep(d) => *d = t,
            Wait::Poll(_, l) => l.timeout = t,
        }
    }
}

/// A step table as written, resolved. `Err((key, message))` names the key
/// of the table the message is about, for the caller to point at.
pub fn resolve(s: &StepConfig) -> Result<Step, (&'static str, String)> {
    let kind = s.wait;
    // The keys this kind takes besides wait, name and timeout.
    let takes: &[&str] = match kind {
        WaitKind::Sleep => &["duration"],
        WaitKind::Ping | WaitKind::Login | WaitKind::SetupDone => {
            &["stall_timeout", "reset_on_timeout"]
        }
        WaitKind::Port => &["port", "stall_timeout", "reset_on_timeout"],
        WaitKind::Banner => &["port", "regex", "stall_timeout", "reset_on_timeout"],
        WaitKind::Command => &["command", "regex", "stall_timeout", "reset_on_timeout"],
        WaitKind::Reboot => &["command", "stall_timeout", "reset_on_timeout"],
    };
    let given = [
        ("port", s.port.is_some()),
        ("regex", s.regex.is_some()),
        ("command", s.command.is_some()),
        ("duration", s.duration.is_some()),
        ("stall_timeout", s.stall_timeout.is_some()),
        ("reset_on_timeout", s.reset_on_timeout.is_some()),
    ];
    if let Some((key, _)) = given.iter().find(|(k, set)| *set && !takes.contains(k)) {
        return Err((key, format!("a `{}` step takes no `{key}`", kind.name())));
    }
    let compile = |r: &str| Regex::new(r).map_err(|e| ("regex", format!("not a valid regex: {e}")));
    let limits = StepLimits {
        timeout: s.timeout.unwrap_or(DEFAULT_TIMEOUT),
        stall: s.stall_timeout,
        reset_on_timeout: s.reset_on_timeout,
    };
    let probe = match kind {
        WaitKind::Sleep => {
            let Some(d) = s.duration.or(s.timeout) else {
                return Err(("wait", "a `sleep` step needs duration = \"30s\"".into()));
            };
            return Ok(Step {
                name: s.name.clone().unwrap_or_else(|| kind.name().into()),
                wait: Wait::Sleep(d),
            });
        }
        WaitKind::Ping => Probe::Ping,
        WaitKind::Port => Probe::Port { port: s.port },
        WaitKind::Banner => match &s.regex {
            Some(r) => Probe::Banner {
                port: s.port,
                regex: compile(r)?,
            },
            None => return Err(("wait", "a `banner` step needs regex = \"...\"".into())),
        },
        WaitKind::Login => Probe::Login,
        WaitKind::SetupDone => Probe::SetupDone,
        WaitKind::Command => match &s.command {
            Some(c) if !c.is_empty() => Probe::Command {
                command: c.clone(),
                regex: s.regex.as_deref().map(compile).transpose()?,
            },
            _ => {
                return Err((
                    "wait",
                    "a `command` step needs command = [\"prog\", \"arg\", ...]".into(),
                ));
            }
        },
        WaitKind::Reboot => Probe::Reboot {
            trigger: s.command.clone().filter(|c| !c.is_empty()),
        },
    };
    Ok(Step {
        name: s.name.clone().unwrap_or_else(|| kind.name().into()),
        wait: Wait::Poll(probe, limits),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reboot_step_resets_without_reset_on_timeout_and_others_do_not() {
        let l = StepLimits::timeout(Duration::from_secs(300));
        let reboot = Probe::Reboot { trigger: None };
        // VCL's wait_for_reboot: 300 s, then 300 s + 2 x 120 s after a reset.
        assert_eq!(l.reset_wait(&reboot), Some(Duration::from_secs(540)));
        assert_eq!(l.reset_wait(&Probe::Login), None);
        assert_eq!(l.reset_wait(&Probe::Port { port: None }), None);
        let set = StepLimits {
            reset_on_timeout: Some(Duration::from_secs(60)),
            ..l
        };
        assert_eq!(set.reset_wait(&reboot), Some(Duration::from_secs(60)));
        assert_eq!(set.reset_wait(&Probe::Login), Some(Duration::from_secs(60)));
    }
}
