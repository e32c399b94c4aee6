//! Built-in OS profiles: the wait sequences and timeouts each OS family
//! needs, taken from Apache VCL's OS modules. A `[os.NAME]` table overrides
//! them key by key.

use std::time::Duration;

use super::model::HostKeyPolicy;
use super::model::{ChannelKind, Family, ImageConfig, StepConfig, WaitKind};
use super::plan::Profile;

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

/// The built-in profile of family `f` for `image` (Windows timings depend on
/// the image being virtual or generalized with Sysprep).
pub fn builtin_profile(f: Family, image: &ImageConfig, state_dir: &std::path::Path) -> Profile {
    let channel = default_channel(f);
    let mut p = Profile {
        name: f.name().to_string(),
        family: f,
        channel,
        user: if f.is_windows() {
            "Administrator".into()
        } else {
            "root".into()
        },
        key_file: None,
        password_file: None,
        port: match channel {
            ChannelKind::Ssh => 22,
            ChannelKind::Winrm => 5985,
            ChannelKind::None => 0,
        },
        host_keys: HostKeyPolicy::ReplaceAfterLoad,
        known_hosts: state_dir.join("known_hosts"),
        first_boot: f != Family::Generic,
        cloud_init: false,
        https: false,
        ca_file: None,
        insecure: false,
        admin_password_file: None,
        steps: Vec::new(),
        stable_for: if f.is_windows() {
            secs(30)
        } else {
            Duration::ZERO
        },
        connect_timeout: secs(5),
        command_timeout: mins(2),
    };
    p.steps = match f {
        Family::Generic => Vec::new(),
        Family::Linux => linux_steps(),
        _ => {
            let (initial, response, reset) = windows_timing(f, image);
            let mut sleep = StepConfig::new(WaitKind::Sleep, initial);
            sleep.name = Some("initial-wait".into());
            sleep.duration = Some(initial);
            let mut port = StepConfig::new(WaitKind::Port, response);
            port.name = Some("response".into());
            port.reset_on_timeout = reset;
            let mut steps = vec![sleep, port];
            if image.sysprep {
                // Sysprep's specialize pass reboots at least once before the
                // OS is usable: a WinRM answer before that is too early.
                let mut r = StepConfig::new(WaitKind::Reboot, response);
                r.name = Some("sysprep-reboot".into());
                steps.push(r);
            }
            steps.push(StepConfig::new(WaitKind::Login, mins(5)));
            steps
        }
    };
    p
}

fn linux_steps() -> Vec<StepConfig> {
    let mut banner = StepConfig::new(WaitKind::Banner, mins(2));
    banner.regex = Some("^SSH-".into());
    vec![
        StepConfig::new(WaitKind::Port, mins(15)),
        banner,
        StepConfig::new(WaitKind::Login, mins(5)),
    ]
}

/// The cloud-init wait a linux profile appends when `cloud_init = true`.
pub fn cloud_init_step() -> StepConfig {
    let mut s = StepConfig::new(WaitKind::Command, mins(20));
    s.name = Some("cloud-init".into());
    s.command = Some(vec!["cloud-init".into(), "status".into(), "--wait".into()]);
    s.regex = Some("status: done".into());
    s
}
