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
        // XP/2003: mini-setup is short; VCL waits 15 s, then up to 15 min.
        Family::Windows5 => (secs(15), mins(15), None),
        // Vista/2008/7: VCL's windows 6 module. A VM comes up fast; a Sysprep
        // image on bare metal runs a long mini-setup; on failure, power reset
        // and 10 more minutes.
        Family::Windows6 if image.r#virtual => (secs(5), mins(5), Some(mins(10))),
        Family::Windows6 if image.sysprep => (secs(60), mins(30), Some(mins(10))),
        Family::Windows6 => (secs(15), mins(10), Some(mins(10))),
        // 10/11/2016+: specialize passes and updates take longer still.
        Family::Windows10 if image.r#virtual => (secs(5), mins(10), Some(mins(10))),
        Family::Windows10 if image.sysprep => (secs(60), mins(45), Some(mins(10))),
        _ => (secs(15), mins(15), Some(mins(10))),
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
                // Sysprep's specialize pass reboots at least once before the
                // OS is usable: a WinRM answer before that is too early.
                steps.push(
                    Step::poll(Probe::Reboot { trigger: None }, response).named("sysprep-reboot"),
                );
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

fn linux_steps() -> Vec<Step> {
    vec![
        Step::poll(Probe::Port { port: None }, mins(15)),
        Step::poll(
            Probe::Banner {
                port: None,
                regex: literal("^SSH-"),
            },
            mins(2),
        ),
        Step::poll(Probe::Login, mins(5)),
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
