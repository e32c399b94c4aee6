//! The `[os.NAME]` keys the OS families judge together: the channel's
//! (SSH's host-key policy, WinRM's authentication and certificate pin),
//! and the first boot's sources and time servers, which
//! reach command lines and firewall rules, so they must parse as what they
//! claim to be. Each family's
//! [`crate::config::FamilyRules::check_keys`] starts here.

use crate::config::{FamilyRules, KeyError, OsConfig, WaitKind};

/// Checks the keys every family shares in profile `profile`: the
/// channel's (`host_keys` names a policy of the SSH channel; WinRM's
/// `auth` and `thumbprint` read, and its keys that only work together),
/// `allow_from` holds addresses or CIDRs, `time_servers` host names or
/// addresses, `ports` TCP ports (1-65535, each once).
pub fn check_shared(profile: &str, os: &OsConfig) -> Result<(), KeyError> {
    super::channel::check_keys(profile, os)?;
    for (i, a) in os.allow_from.iter().flatten().enumerate() {
        check_cidr(a).map_err(|why| item("allow_from", i, why))?;
    }
    for (i, t) in os.time_servers.iter().flatten().enumerate() {
        if !plain_host(t) {
            let why = format!("time server `{t}` is not a host name or address");
            return Err(item("time_servers", i, why));
        }
    }
    let ports = os.ports.as_deref().unwrap_or_default();
    for (i, p) in ports.iter().enumerate() {
        if *p == 0 {
            return Err(item("ports", i, "port 0 is no TCP port: 1 to 65535".into()));
        }
        if ports[..i].contains(p) {
            return Err(item("ports", i, format!("port {p} is named twice")));
        }
    }
    Ok(())
}

/// Refuses the Windows-only first-boot keys on a profile of another
/// family.
pub fn refuse_windows_keys(profile: &str, os: &OsConfig) -> Result<(), KeyError> {
    for (key, set) in [
        ("activation", os.activation.is_some()),
        ("kms_hosts", os.kms_hosts.is_some()),
        ("mak_file", os.mak_file.is_some()),
        ("domain", os.domain.is_some()),
        ("domain_dns", os.domain_dns.is_some()),
    ] {
        if set {
            return Err(KeyError::at(
                key,
                format!(
                    "`{key}` is a Windows first-boot action, and profile `{profile}` is not a windows family"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a `setup-done` step on a family that is not Windows: it asks
/// Windows' own setup state.
pub fn refuse_setup_done(
    family: &dyn FamilyRules,
    profile: &str,
    kind: WaitKind,
) -> Result<(), String> {
    if kind != WaitKind::SetupDone {
        return Ok(());
    }
    Err(format!(
        "a `setup-done` step asks Windows; profile `{profile}` is family {}",
        family.name()
    ))
}

/// An error at item `i` of the array `key`.
fn item(key: &str, i: usize, message: String) -> KeyError {
    KeyError {
        path: vec![key.to_string(), i.to_string()],
        message,
    }
}

/// An address or a CIDR (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`).
pub fn check_cidr(s: &str) -> Result<(), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address or CIDR (like 10.0.0.0/8)"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.map(|p| p.parse::<u8>()) {
        None => Ok(()),
        Some(Ok(n)) if n <= max => Ok(()),
        Some(_) => Err(format!("`{s}`: the prefix length must be 0 to {max}")),
    }
}

/// A host name or address a first-boot command line may hold as is.
pub fn plain_host(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}
