//! The checks serde cannot make: references between tables, values in
//! range, the keys a profile's channel and family take, and every image's
//! profile resolving. Each returns the bad key as data ([`KeyError`], its
//! path from the file's top); the loader places it at FILE:LINE:COL.

use std::path::Path;

use super::defaults::{PROBE_INTERVAL_MAX, PROBE_INTERVAL_MIN};
use super::error::KeyError;
use super::family::Families;
use super::model::{ChannelKind, ComputerConfig, Config, ImageConfig, OsConfig, StaticAddress};
use super::plan;

/// Checks `c`, whose provisioners without a table are `builtin` and whose
/// profiles resolve against `families`; the first error found.
pub fn validate(c: &Config, builtin: &[&str], families: &Families) -> Result<(), KeyError> {
    check_top(c)?;
    for (name, os) in &c.os {
        check_os(families, name, os)?;
    }
    for (name, img) in &c.images {
        check_image(c, builtin, families, name, img)?;
    }
    for (name, comp) in &c.computers {
        check_computer(c, builtin, name, comp)?;
    }
    check_networks(c)?;
    // Every image's profile resolves (step names in `timeouts` exist), so
    // `reimage check` finds what a run would trip over.
    for (name, img) in &c.images {
        check_image_profile(c, families, name, img)?;
    }
    Ok(())
}

/// The top-level keys, `[logs]`, `[coordination]`, and each provisioner's
/// `kind`.
fn check_top(c: &Config) -> Result<(), KeyError> {
    if c.max_attempts == 0 {
        return Err(KeyError::at(
            "max_attempts",
            "max_attempts must be 1 or more",
        ));
    }
    if !(c.timeout_growth.is_finite() && c.timeout_growth >= 1.0) {
        return Err(KeyError::at(
            "timeout_growth",
            "timeout_growth must be 1.0 or more",
        ));
    }
    if c.logs.keep_runs == 0 {
        return Err(KeyError::new(
            &["logs", "keep_runs"],
            "keep_runs must be 1 or more (the run in progress is one)",
        ));
    }
    if c.logs.journald && c.logs.syslog {
        return Err(KeyError::new(
            &["logs", "syslog"],
            "`journald` and `syslog` are both true: events go to one of them (journald keeps the fields; systemd-journald also takes what arrives on /dev/log)",
        ));
    }
    if c.logs.socket.is_some() && !c.logs.journald && !c.logs.syslog {
        return Err(KeyError::new(
            &["logs", "socket"],
            "`socket` is set, but neither `journald` nor `syslog` is true: set one of them, or remove `socket`",
        ));
    }
    if let Some(t) = &c.metrics.textfile
        && (!t.is_absolute() || t.extension().is_none_or(|e| e != "prom"))
    {
        return Err(KeyError::new(
            &["metrics", "textfile"],
            "`textfile` must be an absolute path ending in .prom (node_exporter's textfile collector reads only *.prom files), e.g. /var/lib/node_exporter/textfile/reimage.prom",
        ));
    }
    if let Some(s) = &c.coordination
        && let Err((key, msg)) = s.validate()
    {
        return Err(KeyError::new(&["coordination", key], msg));
    }
    for (name, p) in &c.provisioners {
        if !matches!(p.get("kind"), Some(toml::Value::String(_))) {
            return Err(KeyError::new(
                &["provisioners", name],
                format!("provisioner `{name}` needs `kind = \"...\"` (a string)"),
            ));
        }
    }
    Ok(())
}

/// `[images.NAME]`: its attempts, OS profile, provisioner and image check.
fn check_image(
    c: &Config,
    builtin: &[&str],
    families: &Families,
    name: &str,
    img: &ImageConfig,
) -> Result<(), KeyError> {
    if img.max_attempts == Some(0) {
        return Err(KeyError::new(
            &["images", name, "max_attempts"],
            "max_attempts must be 1 or more",
        ));
    }
    if !c.os.contains_key(&img.os) && families.get(&img.os).is_none() {
        let all = families.names();
        let known: Vec<&str> =
            c.os.keys()
                .map(String::as_str)
                .chain(all.split(", "))
                .collect();
        let hint = super::words::nearest(&img.os, &known)
            .map(|k| format!(": did you mean `{k}`?"))
            .unwrap_or_default();
        return Err(KeyError::new(
            &["images", name, "os"],
            format!(
                "image `{name}` names OS profile `{}`, which is neither an [os.{}] table nor a built-in profile ({all}){hint}",
                img.os, img.os,
            ),
        ));
    }
    if let Some(p) = &img.provisioner {
        let at = ["images", name, "provisioner"];
        check_provisioner(c, builtin, p, &at, &format!("image `{name}`"))?;
    }
    let Some(chk) = &img.image_check else {
        return Ok(());
    };
    let at = ["images", name, "image_check"];
    if chk.command.is_empty() {
        return Err(KeyError::new(&at, "image_check.command is empty"));
    }
    regex::Regex::new(&chk.expect)
        .map_err(|e| KeyError::new(&at, format!("image_check.expect is not a valid regex: {e}")))?;
    Ok(())
}

/// `[computers.NAME]`: its name, address, provisioner and static address.
fn check_computer(
    c: &Config,
    builtin: &[&str],
    name: &str,
    comp: &ComputerConfig,
) -> Result<(), KeyError> {
    crate::state::check_computer_name(name)
        .map_err(|why| KeyError::new(&["computers", name], why))?;
    let address = ["computers", name, "address"];
    if comp.address.trim().is_empty() {
        return Err(KeyError::new(
            &address,
            format!("computer `{name}` has an empty address"),
        ));
    }
    check_address(&comp.address).map_err(|why| KeyError::new(&address, why))?;
    if let Some(m) = &comp.mac {
        unicast_mac(m).map_err(|why| {
            KeyError::new(
                &["computers", name, "mac"],
                format!("computer `{name}`: {why}"),
            )
        })?;
    }
    if let Some(p) = &comp.provisioner {
        let at = ["computers", name, "provisioner"];
        check_provisioner(c, builtin, p, &at, &format!("computer `{name}`"))?;
    }
    if let Some(st) = &comp.static_address
        && let Err((key, why)) = check_static_address(st)
    {
        return Err(KeyError::new(
            &["computers", name, "static_address", key],
            why,
        ));
    }
    Ok(())
}

/// The two networks: each computer's public interface keys, and no MAC or
/// static public address twice in the file (`network::check`).
fn check_networks(c: &Config) -> Result<(), KeyError> {
    super::network::check(c).map_err(|(name, (path, why))| {
        let mut at = vec!["computers", name.as_str()];
        at.extend(path.iter().map(String::as_str));
        KeyError::new(&at, format!("computer `{name}`: {why}"))
    })
}

/// A static address: IPv4 with a prefix length, an IPv4 gateway, an
/// interface name cmd.exe passes as it is. Err names the bad key.
fn check_static_address(st: &StaticAddress) -> Result<(), (&'static str, String)> {
    let v4 = |s: &str| s.parse::<std::net::Ipv4Addr>().is_ok();
    let addr_ok = st
        .address
        .split_once('/')
        .is_some_and(|(a, p)| v4(a) && p.parse::<u8>().is_ok_and(|n| n <= 32));
    if !addr_ok {
        return Err((
            "address",
            format!(
                "`{}` is not an IPv4 address with a prefix length (like 192.0.2.7/24)",
                st.address
            ),
        ));
    }
    if st.gateway.as_deref().is_some_and(|g| !v4(g)) {
        return Err(("gateway", "the gateway is not an IPv4 address".to_string()));
    }
    if st.interface.is_empty() || st.interface.contains(['"', '%', '&', '|', '<', '>', '^']) {
        return Err((
            "interface",
            "the interface name is empty or holds quotes, %, &, |, <, > or ^".to_string(),
        ));
    }
    Ok(())
}

/// An address reaches commands (ping, ssh) as an argument: it must not
/// look like an option, nor hold white space or control characters.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.starts_with('-') {
        return Err(format!(
            "address {address:?} starts with '-', which commands would take as an option: give a host name or IP address"
        ));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "address {address:?} holds white space or control characters: give a host name or IP address"
        ));
    }
    Ok(())
}

/// A MAC address as a NIC can have it: six bytes in hex (`:` or `-`
/// between them), unicast (the first byte even), not all zeros.
pub fn unicast_mac(mac: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    let mut b = [0u8; 6];
    let ok = parts.len() == 6
        && parts.iter().zip(b.iter_mut()).all(|(p, x)| {
            p.len() == 2
                && p.chars().all(|c| c.is_ascii_hexdigit())
                && u8::from_str_radix(p, 16).map(|v| *x = v).is_ok()
        });
    if !ok {
        return Err(format!(
            "`mac` {mac:?} is not a MAC address: six bytes in hex, like \"52:54:00:00:07:03\""
        ));
    }
    if b.iter().all(|x| *x == 0) {
        return Err(format!("`mac` {mac:?} is all zeros, which no NIC can have"));
    }
    if b[0] & 1 == 1 {
        return Err(format!(
            "`mac` {mac:?} is a multicast address (the first byte is odd), which no NIC can have: give a unicast one"
        ));
    }
    Ok(b)
}

/// No two computers share an address and port (two computers on one
/// address differ in their `port`, as forwarded ports of local VMs do; a
/// loopback address is this host's, and exempt). `check` looks; a run
/// loads one computer and does not. (Two computers with one MAC are
/// refused with the networks: `network::check`.)
pub fn duplicates(c: &Config) -> Result<(), KeyError> {
    let mut places: std::collections::BTreeMap<(String, Option<u16>), &str> = Default::default();
    for (name, comp) in &c.computers {
        let place = (comp.address.trim().to_ascii_lowercase(), comp.port);
        if loopback(&place.0) {
            continue;
        }
        if let Some(other) = places.insert(place, name) {
            let port = comp
                .port
                .map(|p| format!(" and port {p}"))
                .unwrap_or_default();
            return Err(KeyError::new(
                &["computers", name, "address"],
                format!(
                    "computer `{name}` has the address {}{port} of computer `{other}`: a run would reach the other computer (give each its own address, or its own `port` when they share one)",
                    comp.address
                ),
            ));
        }
    }
    Ok(())
}

/// An address of this host: local VMs behind forwarded ports and test
/// set-ups share it, so it is no computer's own.
fn loopback(address: &str) -> bool {
    address == "localhost"
        || address
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Provisioner `p`, named at key `at` by `who`, has a table or is built
/// in.
fn check_provisioner(
    c: &Config,
    builtin: &[&str],
    p: &str,
    at: &[&str],
    who: &str,
) -> Result<(), KeyError> {
    if c.provisioners.contains_key(p) || builtin.contains(&p) {
        return Ok(());
    }
    let known: Vec<&str> = c
        .provisioners
        .keys()
        .map(String::as_str)
        .chain(builtin.iter().copied())
        .collect();
    let hint = super::words::nearest(p, &known)
        .map(|k| format!(": did you mean `{k}`?"))
        .unwrap_or_default();
    Err(KeyError::new(
        at,
        format!(
            "{who} names provisioner `{p}`, which is not defined{hint} (known: {})",
            known.join(", ")
        ),
    ))
}

/// `[os.NAME]`: its family, timeouts, probe interval, the keys its channel
/// takes, its steps, and the keys its family decides on.
fn check_os(families: &Families, name: &str, os: &OsConfig) -> Result<(), KeyError> {
    let at = |key: &str, msg: String| KeyError::new(&["os", name, key], msg);
    if let Some(f) = &os.family
        && families.get(f).is_none()
    {
        let all = families.names();
        let hint = super::words::nearest(f, &all.split(", ").collect::<Vec<_>>())
            .map(|k| format!(": did you mean `{k}`?"))
            .unwrap_or_default();
        let msg = format!("unknown family `{f}`, expected one of {all}{hint}");
        return Err(at("family", msg));
    }
    if os.family.is_none() && families.get(name).is_none() && os.steps.is_none() {
        return Err(KeyError::new(
            &["os", name],
            format!(
                "OS profile `{name}` needs `family` ({}) or its own `steps`",
                families.names()
            ),
        ));
    }
    for (key, d) in [
        ("connect_timeout", os.connect_timeout),
        ("command_timeout", os.command_timeout),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            let msg = format!("`{key}` of 0s could never succeed: give a duration longer than 0s");
            return Err(at(key, msg));
        }
    }
    if let Some(d) = os.probe_interval
        && !(PROBE_INTERVAL_MIN..=PROBE_INTERVAL_MAX).contains(&d)
    {
        let msg = format!(
            "`probe_interval` must be from {} to {} (at most 25 probes a second per computer)",
            humantime::format_duration(PROBE_INTERVAL_MIN),
            humantime::format_duration(PROBE_INTERVAL_MAX)
        );
        return Err(at("probe_interval", msg));
    }
    check_channel_keys(families, name, os)?;
    plan::profile_steps(families, name, os)?;
    families
        .of(name, os)
        .check_keys(name, os)
        .map_err(|e| e.under(&["os", name]))
}

/// Refuses the keys of `[os.NAME]` that its channel does not use (SSH keys
/// on WinRM, WinRM's on SSH, login keys on channel none): one would be
/// ignored silently otherwise.
fn check_channel_keys(families: &Families, name: &str, o: &OsConfig) -> Result<(), KeyError> {
    let (_, kind) = plan::family_and_channel(families, name, o);
    let keys = [
        ("key_file", o.key_file.is_some(), ChannelKind::Ssh),
        ("host_keys", o.host_keys.is_some(), ChannelKind::Ssh),
        ("known_hosts", o.known_hosts.is_some(), ChannelKind::Ssh),
        ("https", o.https.is_some(), ChannelKind::Winrm),
        ("ca_file", o.ca_file.is_some(), ChannelKind::Winrm),
        ("insecure", o.insecure.is_some(), ChannelKind::Winrm),
        ("auth", o.auth.is_some(), ChannelKind::Winrm),
        (
            "allow_unencrypted",
            o.allow_unencrypted.is_some(),
            ChannelKind::Winrm,
        ),
        ("thumbprint", o.thumbprint.is_some(), ChannelKind::Winrm),
    ];
    if let Some((key, _, of)) = keys.iter().find(|(_, set, of)| *set && *of != kind) {
        return Err(KeyError::new(
            &["os", name, key],
            format!(
                "`{key}` is a setting of channel {}, and profile `{name}` talks over channel {}",
                of.name(),
                kind.name()
            ),
        ));
    }
    let login = [
        ("user", o.user.is_some()),
        ("password_file", o.password_file.is_some()),
    ];
    if let (ChannelKind::None, Some((key, _))) = (kind, login.iter().find(|(_, set)| *set)) {
        return Err(KeyError::new(
            &["os", name, key],
            format!(
                "profile `{name}` has channel none, which logs in nowhere: `{key}` is not used"
            ),
        ));
    }
    Ok(())
}

/// Image `name`'s profile resolves, and an image check has a channel to
/// run over.
fn check_image_profile(
    c: &Config,
    families: &Families,
    name: &str,
    img: &ImageConfig,
) -> Result<(), KeyError> {
    let profile = plan::profile(c, families, &img.os, img, Path::new("."))?;
    if img.image_check.is_some() && profile.channel.kind() == ChannelKind::None {
        return Err(KeyError::new(
            &["images", name, "image_check"],
            format!(
                "image `{name}` has an image_check, but its OS profile `{}` has channel none, so the check could never run: remove it, or use a profile with channel ssh or winrm",
                img.os
            ),
        ));
    }
    Ok(())
}
