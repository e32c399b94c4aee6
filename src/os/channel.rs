//! Opens the channel the profile names, for the plan's computer.

use anyhow::Result;
use std::path::PathBuf;

use crate::config::{ChannelSettings, HostKeyPolicy, Plan, Thumbprint, WinrmAuth};
use crate::control::Channel;
use crate::control::ssh::{Ssh, SshConfig};
use crate::control::winrm::{Trust, WinRm, WinRmConfig};

/// The channel for this plan, or `None` for `channel = "none"`.
pub fn open(plan: &Plan) -> Result<Option<Box<dyn Channel>>> {
    open_with(plan, None)
}

/// Like [`open`], for the channel a before-load step opens: an SSH channel
/// keeps its host keys in `known_hosts` under the replace-after-load
/// policy, as the old OS's key must not be trusted for the new one; a
/// WinRM channel with `thumbprint = "accept-new"` checks the recorded
/// certificate, learns none, and marks the record replaceable by the first
/// connection after the load.
pub fn open_with(plan: &Plan, known_hosts: Option<PathBuf>) -> Result<Option<Box<dyn Channel>>> {
    let p = &plan.profile;
    Ok(match &p.channel {
        ChannelSettings::None { .. } => None,
        ChannelSettings::Ssh(ssh) => {
            let (known_hosts, host_keys) = match known_hosts {
                Some(k) => (k, HostKeyPolicy::ReplaceAfterLoad),
                None => (ssh.known_hosts.clone(), ssh.host_keys),
            };
            Some(Box::new(Ssh::new(SshConfig {
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
            })))
        }
        ChannelSettings::Winrm(w) => {
            let trust = if w.insecure {
                Trust::Insecure
            } else if let Some(ca) = &w.ca_file {
                Trust::CaFile(ca.clone())
            } else {
                match w.thumbprint {
                    Some(Thumbprint::Pinned(t)) => Trust::Pinned(t),
                    // Stored under the computer's name, like SSH's keys.
                    Some(Thumbprint::AcceptNew) => Trust::Learned {
                        file: crate::state::StateDir::new(&plan.state_dir)
                            .winrm_thumbprint(&plan.computer.name),
                        before_load: known_hosts.is_some(),
                    },
                    None => Trust::System,
                }
            };
            Some(Box::new(WinRm::new(WinRmConfig {
                host: plan.computer.address.clone(),
                port: plan.port_over(w.port),
                https: w.https,
                user: w.user.clone(),
                password_file: w.password_file.clone(),
                auth: w.auth,
                trust,
                operation_timeout: p.command_timeout.min(std::time::Duration::from_secs(60)),
            })?))
        }
    })
}

/// What a run must say about its channel every time: settings that give
/// up a protection on purpose.
pub fn warnings(plan: &Plan) -> Vec<String> {
    let ChannelSettings::Winrm(w) = &plan.profile.channel else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if w.auth == WinrmAuth::Basic && !w.https && w.allow_unencrypted {
        out.push(format!(
            "profile `{}`: WinRM Basic authentication over plain HTTP (allow_unencrypted = true): the password and every command travel readable by anyone on the network path",
            plan.profile.name
        ));
    }
    if w.https && w.insecure {
        out.push(format!(
            "profile `{}`: the WinRM listener's TLS certificate is not verified (insecure = true): anyone on the network path can pose as the computer",
            plan.profile.name
        ));
    }
    out
}
