//! Opens the channel the profile names, for the plan's computer, decoding
//! what the configuration keeps as written for the channel (the SSH
//! host-key policy is the SSH channel's: `control::ssh::HostKeyPolicy`).

use anyhow::Result;
use std::path::PathBuf;

use crate::config::{ChannelSettings, KeyError, OsConfig, Plan, SshSettings};
use crate::control::Channel;
use crate::control::none::NoChannel;
use crate::control::ssh::{HostKeyPolicy, Ssh, SshConfig};
use crate::control::winrm::{WinRm, WinRmConfig};

/// The channel for this plan (channel none is one that only probes the
/// port).
pub fn open(plan: &Plan) -> Result<Box<dyn Channel>> {
    open_with(plan, None)
}

/// Like [`open`], but an SSH channel keeps its host keys in `known_hosts`
/// under the replace-after-load policy: used before a load, where the old
/// OS's key must not be trusted for the new one.
pub fn open_with(plan: &Plan, known_hosts: Option<PathBuf>) -> Result<Box<dyn Channel>> {
    let p = &plan.profile;
    Ok(match &p.channel {
        ChannelSettings::None { .. } => {
            Box::new(NoChannel::new(&plan.computer.address, plan.port()))
        }
        ChannelSettings::Ssh(ssh) => {
            let (known_hosts, host_keys) = match known_hosts {
                Some(k) => (k, HostKeyPolicy::ReplaceAfterLoad),
                None => (ssh.known_hosts.clone(), host_keys(ssh)?),
            };
            Box::new(Ssh::new(SshConfig {
                host: plan.computer.address.clone(),
                port: plan.port_over(ssh.port),
                user: ssh.user.clone(),
                key_file: ssh.key_file.clone(),
                password_file: ssh.password_file.clone(),
                known_hosts,
                host_keys,
                // Stored under the computer's name: its address may change
                // from load to load, its identity does not.
                host_alias: plan.computer.name.clone(),
                connect_timeout: p.connect_timeout,
            }))
        }
        ChannelSettings::Winrm(w) => Box::new(WinRm::new(WinRmConfig {
            host: plan.computer.address.clone(),
            port: plan.port_over(w.port),
            https: w.https,
            user: w.user.clone(),
            password_file: w.password_file.clone(),
            ca_file: w.ca_file.clone(),
            insecure: w.insecure,
            operation_timeout: p.command_timeout.min(std::time::Duration::from_secs(60)),
        })?),
    })
}

/// The host-key policy of `ssh`: as written, else the SSH channel's
/// default.
fn host_keys(ssh: &SshSettings) -> Result<HostKeyPolicy> {
    match &ssh.host_keys {
        Some(name) => name.parse().map_err(|e: String| anyhow::anyhow!(e)),
        None => Ok(HostKeyPolicy::default()),
    }
}

/// Refuses a `host_keys` the SSH channel does not know, when the
/// configuration loads.
pub fn check_keys(os: &OsConfig) -> Result<(), KeyError> {
    match &os.host_keys {
        Some(name) => name
            .parse::<HostKeyPolicy>()
            .map(|_| ())
            .map_err(|e| KeyError::at("host_keys", e)),
        None => Ok(()),
    }
}

/// `check`'s lines for the channel beyond the login: an SSH channel's
/// host-key policy and file.
pub fn describe(plan: &Plan) -> Vec<String> {
    let ChannelSettings::Ssh(ssh) = &plan.profile.channel else {
        return Vec::new();
    };
    let policy = match host_keys(ssh) {
        Ok(p) => p.name().to_string(),
        Err(e) => format!("{e:#}"),
    };
    vec![format!(
        "host keys: {policy} ({})",
        ssh.known_hosts.display()
    )]
}
