//! Built-in OS profiles: the wait sequences and timeouts each OS family
//! needs, taken from Apache VCL's OS modules. A `[os.NAME]` table overrides
//! them key by key.

use std::time::Duration;

use regex::Regex;

use super::model::{ChannelKind, Family, ImageConfig};
use super::step::{Probe, Step, StepLimits, Wait};

/// Names of the built-in profiles, one per family.
pub const FAMILIES: [&str; 5] = ["generic", "linux", "windows-5", "windows-6", "windows-10"];

/// The family a built-in profile name stands for.
pub fn family_of(name: &str) -> Option<Family> {
    match name {
        "generic" => Some(Family::Generic),
        "linux" => Some(Family::Linux),
        "windows-5" => Some(Family::Windows5),
        "windows-6" => Some(Family::Windows6),
        "windows-10" => Some(Family::Windows10),
        _ => None,
    }
}

/// The channel a family talks over unless told otherwise.
pub fn default_channel(f: Family) -> ChannelKind {
    match f {
        Family::Generic => ChannelKind::None,
        Family::Linux => ChannelKind::Ssh,
        _ => ChannelKind::Winrm,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// Windows timings as Apache VCL's modules have them: (initial wait, response
/// timeout, power-reset extra wait).
fn windows_timing(f: Family, image: &ImageConfig) -> (Duration, Duration, Option<Duration>) {
    match f {
        // XP/2003: VCL's Windows.pm post_load waits 15 s, then up to 900 s
        // (wait_for_response(15, 900, 8)); Version_5.pm has no power reset.
        Family::Windows5 => (secs(15), mins(15), None),
        // Vista and later: Version_6.pm wait_for_response: a VM 5 s / 300 s,
        // a Sysprep image 60 s / 1800 s, else 15 s / 600 s; when that fails
        // and the provisioner can, power reset and 600 s more. VCL's
        // Version_10 modules inherit it unchanged, and so does windows-10.
        _ if image.r#virtual => (secs(5), mins(5), Some(mins(10))),
        _ if image.sysprep => (secs(60), mins(30), Some(mins(10))),
        _ => (secs(15), mins(10), Some(mins(10))),
    }
}

/// Login user of family `f` unless told otherwise.
pub fn default_user(f: Family) -> &'static str {
    if f.is_windows() {
        "Administrator"
    } else {
        "root"
    }
}

/// How long a computer of family `f` must keep answering before it is
/// ready, unless told otherwise.
pub fn default_stable_for(f: Family) -> Duration {
    if f.is_windows() {
        secs(30)
    } else {
        Duration::ZERO
    }
}

/// Connect timeout of one channel attempt unless told otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between port or banner probes while the target answers (refuses
/// or sends a wrong banner): the poller's own 40 ms, 25 probes a second.
/// `probe_interval` may only lengthen it.
pub const PROBE_INTERVAL: Duration = crate::wait::Rate::TCP.answering;
/// The shortest `probe_interval`: the cap of 25 probes a second.
pub const PROBE_INTERVAL_MIN: Duration = PROBE_INTERVAL;
/// The longest `probe_interval`.
pub const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// Timeout of one first-boot command unless told otherwise.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The built-in wait sequence of family `f` for `image` (Windows timings
/// depend on the image being virtual or generalized with Sysprep).
pub fn builtin_steps(f: Family, image: &ImageConfig) -> Vec<Step> {
    match f {
        Family::Generic => Vec::new(),
        Family::Linux => linux_steps(),
        _ => {
            let (initial, response, reset) = windows_timing(f, image);
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
            if image.sysprep {
                // Sysprep reboots between its passes and WinRM may answer
                // before, between or after them: Windows itself says when
                // setup is complete. Within the response timeout (VCL has
                // one wait for all of it).
                steps.push(Step::poll(Probe::SetupDone, response).named("sysprep-done"));
            }
            steps.push(Step::poll(Probe::Login, mins(5)));
            steps
        }
    }
}

/// A regex written in this file.
fn literal(re: &str) -> Regex {
    Regex::new(re).unwrap_or_else(|e| panic!("built-in regex {re}: {e}"))
}

/// VCL's Linux.pm post_load waits 600 s for SSH (port and login in one,
/// wait_for_response(5, 600, 5)). reimage gives the port those 600 s and,
/// once it answers, the banner and the login 1 min each: an sshd that
/// accepts connections answers both within seconds (a deviation, in the
/// man page).
fn linux_steps() -> Vec<Step> {
    vec![
        Step::poll(Probe::Port { port: None }, mins(10)),
        Step::poll(
            Probe::Banner {
                port: None,
                regex: literal("^SSH-"),
            },
            mins(1),
        ),
        Step::poll(Probe::Login, mins(1)),
    ]
}

/// The cloud-init wait a linux profile appends when `cloud_init = true`.
pub fn cloud_init_step() -> Step {
    Step::poll(
        Probe::Command {
            command: vec!["cloud-init".into(), "status".into(), "--wait".into()],
            regex: Some(literal("status: done")),
        },
        mins(20),
    )
    .named("cloud-init")
}
