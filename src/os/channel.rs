//! Opens the channel the profile names, for the plan's computer, decoding
//! what the configuration keeps as written for the channel: the SSH
//! host-key policy is the SSH channel's (`control::ssh::HostKeyPolicy`),
//! the WinRM `auth` and `thumbprint` the WinRM channel's
//! (`control::winrm::auth::Auth`, `control::winrm::pin::Thumbprint`).
//! The families' key checks refuse, when the configuration loads, what
//! the channel could not decode, and the WinRM keys that only work
//! together.

use anyhow::Result;
use std::path::PathBuf;

use crate::config::{ChannelSettings, KeyError, OsConfig, Plan, SshSettings, WinrmSettings};
use crate::control::Channel;
use crate::control::none::NoChannel;
use crate::control::ssh::{HostKeyPolicy, Ssh, SshConfig};
use crate::control::winrm::auth::Auth;
use crate::control::winrm::pin::Thumbprint;
use crate::control::winrm::{LoginPassword, Trust, WinRm, WinRmConfig};
use crate::os::first_boot::Account;
use crate::secret::Secret;
use crate::state::{Password, StateDir};

/// The channel for this plan (channel none is one that only probes the
/// port). `account`: the one the family's first boot gives a new password
/// (see [`passwords`]).
pub fn open(plan: &Plan, account: Option<Account>) -> Result<Box<dyn Channel>> {
    open_with(plan, account, None)
}

/// The passwords a WinRM channel logs in with, in order, when its user is
/// `account` (the one first boot gives a new password): the one the last
/// first boot set, once the computer took it and no load since
/// ([`Password::Kept`]); the image's (`password_file`), what a freshly
/// loaded image has; the kept one from before the last load
/// ([`Password::BeforeLoad`]: that load may never have reached the disk);
/// and one a run set without seeing the computer take it
/// ([`Password::Pending`]). The channel takes the first the computer
/// accepts. Empty (the channel reads `password_file` alone) for any other
/// user.
pub fn passwords(
    plan: &Plan,
    w: &WinrmSettings,
    account: Option<Account>,
) -> Result<Vec<LoginPassword>> {
    let Some(account) = account.filter(|a| is_account(&w.user, a, &plan.computer.name)) else {
        return Ok(Vec::new());
    };
    let state = StateDir::new(&plan.state_dir);
    let who = &plan.computer.name;
    let stored = |slot: Password, what: &str| -> Result<Option<LoginPassword>> {
        Ok(state
            .read_password(who, account.name, slot)?
            .map(|secret| LoginPassword {
                secret,
                from: format!(
                    "{what} ({})",
                    state.password_path(who, account.name, slot).display()
                ),
            }))
    };
    let image = match &w.password_file {
        Some(f) => Some(LoginPassword {
            secret: Secret::from_file(f, "the WinRM password file")?,
            from: format!("the image's ({})", f.display()),
        }),
        None => None,
    };
    Ok([
        stored(Password::Kept, "the one the last first boot set")?,
        image,
        stored(Password::BeforeLoad, "the one from before the last load")?,
        stored(
            Password::Pending,
            "the one a run set without seeing it taken",
        )?,
    ]
    .into_iter()
    .flatten()
    .collect())
}

/// Whether WinRM user `user` is the local `account` of computer `name`:
/// `Administrator`, `.\Administrator` or `NAME\Administrator` (any case;
/// NAME as Windows keeps it, its first 15 characters).
pub(super) fn is_account(user: &str, account: &Account, name: &str) -> bool {
    let (domain, user) = match user.split_once('\\') {
        Some((d, u)) => (Some(d), u),
        None => (None, user),
    };
    let netbios: String = name.chars().take(15).collect();
    user.eq_ignore_ascii_case(account.name)
        && domain.is_none_or(|d| {
            d == "." || d.eq_ignore_ascii_case(&netbios) || d.eq_ignore_ascii_case(name)
        })
}

/// Like [`open`], for the channel a before-load step opens: an SSH channel
/// keeps its host keys in `known_hosts` under the replace-after-load
/// policy, as the old OS's key must not be trusted for the new one; a
/// WinRM channel with `thumbprint = "accept-new"` checks the recorded
/// certificate, learns none, and marks the record replaceable by the first
/// connection after the load.
pub fn open_with(
    plan: &Plan,
    account: Option<Account>,
    known_hosts: Option<PathBuf>,
) -> Result<Box<dyn Channel>> {
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
            passwords: passwords(plan, w, account)?,
            auth: auth(w)?,
            trust: trust(plan, w, known_hosts.is_some())?,
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

/// The WinRM authentication of `w`: as written, else the WinRM channel's
/// default (negotiate).
fn auth(w: &WinrmSettings) -> Result<Auth> {
    match &w.auth {
        Some(name) => name.parse().map_err(|e: String| anyhow::anyhow!(e)),
        None => Ok(Auth::default()),
    }
}

/// The certificate pin of `w`, as written.
fn thumbprint(w: &WinrmSettings) -> Result<Option<Thumbprint>> {
    w.thumbprint
        .as_deref()
        .map(|t| t.parse().map_err(|e: String| anyhow::anyhow!(e)))
        .transpose()
}

/// How the WinRM listener's certificate is trusted: `insecure`, else the
/// `ca_file`, else the `thumbprint` (a learned one kept in the state
/// directory under the computer's name, like SSH's keys), else the
/// system's roots. `before_load`: for the channel a before-load step opens.
fn trust(plan: &Plan, w: &WinrmSettings, before_load: bool) -> Result<Trust> {
    if w.insecure {
        return Ok(Trust::Insecure);
    }
    if let Some(ca) = &w.ca_file {
        return Ok(Trust::CaFile(ca.clone()));
    }
    Ok(match thumbprint(w)? {
        Some(Thumbprint::Pinned(t)) => Trust::Pinned(t),
        Some(Thumbprint::AcceptNew) => Trust::Learned {
            file: StateDir::new(&plan.state_dir).winrm_thumbprint(&plan.computer.name),
            before_load,
        },
        None => Trust::System,
    })
}

/// Refuses, when the configuration loads, a `host_keys` the SSH channel
/// does not know, an `auth` or a `thumbprint` the WinRM channel cannot
/// read, and WinRM keys of profile `profile` that do not work together.
pub fn check_keys(profile: &str, os: &OsConfig) -> Result<(), KeyError> {
    if let Some(name) = &os.host_keys {
        name.parse::<HostKeyPolicy>()
            .map_err(|e| KeyError::at("host_keys", e))?;
    }
    let auth = match &os.auth {
        Some(name) => name.parse::<Auth>().map_err(|e| KeyError::at("auth", e))?,
        None => Auth::default(),
    };
    if let Some(t) = &os.thumbprint {
        t.parse::<Thumbprint>()
            .map_err(|e| KeyError::at("thumbprint", e))?;
    }
    check_winrm_keys(profile, os, auth)
}

/// The WinRM keys that only work together: one way to trust an HTTPS
/// certificate; a pin only over HTTPS; Basic over plain HTTP only when
/// allowed in so many words, and that allowance nowhere else. (They are
/// set only on a profile whose channel is WinRM: validation refuses them
/// elsewhere before the families are asked.)
fn check_winrm_keys(profile: &str, o: &OsConfig, auth: Auth) -> Result<(), KeyError> {
    let https = o.https.unwrap_or(false);
    let trust: Vec<&str> = [
        ("ca_file", o.ca_file.is_some()),
        ("thumbprint", o.thumbprint.is_some()),
        ("insecure", o.insecure == Some(true)),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    if let [_, second, ..] = trust[..] {
        return Err(KeyError::at(
            second,
            format!(
                "set one of `ca_file`, `thumbprint` and `insecure = true` in profile `{profile}`: they are different ways to trust the listener's certificate (this one sets {})",
                trust.join(" and ")
            ),
        ));
    }
    if o.thumbprint.is_some() && !https {
        return Err(KeyError::at(
            "thumbprint",
            format!(
                "`thumbprint` pins the certificate of an HTTPS listener, and profile `{profile}` talks plain HTTP: set https = true, or remove it"
            ),
        ));
    }
    match (auth, https, o.allow_unencrypted) {
        (Auth::Basic, false, Some(true)) => Ok(()),
        (Auth::Basic, false, _) => Err(KeyError::at(
            "auth",
            format!(
                "auth = \"basic\" over plain HTTP sends the password of profile `{profile}` readable by anyone on the path, and Windows refuses it as shipped: leave `auth` out (negotiate: NTLM with every message encrypted, what a stock Windows accepts), use https = true, or set allow_unencrypted = true for a closed lab network"
            ),
        )),
        (_, _, Some(true)) => Err(KeyError::at(
            "allow_unencrypted",
            format!(
                "`allow_unencrypted` lets auth = \"basic\" run over plain HTTP; profile `{profile}` uses {} over {}, which it does not change: remove it",
                auth.name(),
                if https {
                    "HTTPS"
                } else {
                    "HTTP with encrypted messages"
                }
            ),
        )),
        _ => Ok(()),
    }
}

/// `check`'s lines for the channel beyond the login: an SSH channel's
/// host-key policy and file; how a WinRM channel authenticates and
/// protects its messages.
pub fn describe(plan: &Plan) -> Vec<String> {
    match &plan.profile.channel {
        ChannelSettings::Ssh(ssh) => {
            let policy = match host_keys(ssh) {
                Ok(p) => p.name().to_string(),
                Err(e) => format!("{e:#}"),
            };
            vec![format!(
                "host keys: {policy} ({})",
                ssh.known_hosts.display()
            )]
        }
        ChannelSettings::Winrm(w) => vec![format!("winrm: {}", winrm_summary(w))],
        ChannelSettings::None { .. } => Vec::new(),
    }
}

/// How a WinRM channel authenticates and protects its messages, for
/// `check`.
fn winrm_summary(w: &WinrmSettings) -> String {
    let auth = match auth(w) {
        Ok(a) => a,
        Err(e) => return format!("{e:#}"),
    };
    let transport = if !w.https {
        match auth {
            Auth::Basic => "HTTP, NOT encrypted (allow_unencrypted = true)".to_string(),
            _ => "HTTP, every message encrypted (MS-WSMV)".to_string(),
        }
    } else if w.insecure {
        "HTTPS, certificate NOT verified (insecure = true)".to_string()
    } else if let Some(ca) = &w.ca_file {
        format!("HTTPS, certificate verified against {}", ca.display())
    } else {
        match thumbprint(w) {
            Ok(Some(Thumbprint::Pinned(t))) => format!(
                "HTTPS, certificate pinned to SHA-256 {}",
                crate::tls::fmt_thumbprint(&t)
            ),
            Ok(Some(Thumbprint::AcceptNew)) => {
                "HTTPS, certificate pinned as first seen (accept-new; a load may change it)"
                    .to_string()
            }
            Ok(None) => "HTTPS, certificate verified against the system's roots".to_string(),
            Err(e) => format!("{e:#}"),
        }
    };
    format!("auth {}, {transport}", auth.name())
}

/// What a run must say about its channel every time: settings that give
/// up a protection on purpose.
pub fn warnings(plan: &Plan) -> Vec<String> {
    let ChannelSettings::Winrm(w) = &plan.profile.channel else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if auth(w).is_ok_and(|a| a == Auth::Basic) && !w.https && w.allow_unencrypted {
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
