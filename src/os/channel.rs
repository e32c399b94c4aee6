//! Opens the channel the profile names, for the plan's computer.

use anyhow::Result;
use std::path::PathBuf;

use crate::config::{ChannelSettings, HostKeyPolicy, Plan};
use crate::control::Channel;
use crate::control::ssh::{Ssh, SshConfig};
use crate::control::winrm::{WinRm, WinRmConfig};

/// The channel for this plan, or `None` for `channel = "none"`.
pub fn open(plan: &Plan) -> Result<Option<Box<dyn Channel>>> {
    open_with(plan, None)
}

/// Like [`open`], but an SSH channel keeps its host keys in `known_hosts`
/// under the replace-after-load policy: used before a load, where the old
/// OS's key must not be trusted for the new one.
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
        ChannelSettings::Winrm(w) => Some(Box::new(WinRm::new(WinRmConfig {
            host: plan.computer.address.clone(),
            port: plan.port_over(w.port),
            https: w.https,
            user: w.user.clone(),
            password_file: w.password_file.clone(),
            ca_file: w.ca_file.clone(),
            insecure: w.insecure,
            operation_timeout: p.command_timeout.min(std::time::Duration::from_secs(60)),
        })?)),
    })
}
