//! The configuration file's shape (serde), and the checks serde cannot make.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Loaded, builtin};
use crate::duration;
use crate::retention::Retention;
use crate::size;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where locks, event logs and last-run records live.
    pub state_dir: Option<PathBuf>,
    /// Attempts per provision run, unless the image says otherwise.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Attempt k multiplies every load and wait timeout by growth^(k-1).
    #[serde(default = "default_growth")]
    pub timeout_growth: f64,
    /// `[provisioners.NAME]`: how images get onto computers. Kept raw:
    /// each provisioner kind decodes and validates its own table.
    #[serde(default)]
    pub provisioners: BTreeMap<String, toml::Table>,
    /// `[os.NAME]`: OS profiles, each starting from a built-in one.
    #[serde(default)]
    pub os: BTreeMap<String, OsConfig>,
    /// `[images.NAME]`.
    #[serde(default)]
    pub images: BTreeMap<String, ImageConfig>,
    /// `[computers.NAME]`.
    #[serde(default)]
    pub computers: BTreeMap<String, ComputerConfig>,
    /// `[coordination]`: the site-wide lock and load-limit store.
    pub coordination: Option<crate::coord::Settings>,
    /// `[logs]`: how much of each computer's event log is kept.
    #[serde(default)]
    pub logs: LogsConfig,
}

/// `[logs]`: each computer's event log keeps the last `keep_runs` runs, and
/// of the finished ones no more than `max_bytes`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Runs kept, the one in progress included.
    pub keep_runs: u32,
    /// Bytes the finished runs kept may take ("8MiB", or a number).
    #[serde(deserialize_with = "size::de")]
    pub max_bytes: u64,
}

impl Default for LogsConfig {
    fn default() -> LogsConfig {
        let r = Retention::default();
        LogsConfig {
            keep_runs: r.keep_runs,
            max_bytes: r.max_bytes,
        }
    }
}

impl LogsConfig {
    /// The retention the state directory applies.
    pub fn retention(&self) -> Retention {
        Retention {
            keep_runs: self.keep_runs,
            max_bytes: self.max_bytes,
        }
    }
}

fn default_attempts() -> u32 {
    3
}

fn default_growth() -> f64 {
    1.5
}

/// `[computers.NAME]`: one computer reimage can load.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct ComputerConfig {
    /// Where the OS module reaches it (IP address or DNS name).
    pub address: String,
    /// Its name in the provisioner (xCAT node, VM name); default: the
    /// computer's name.
    pub node: Option<String>,
    /// Provisioner that loads this computer; wins over the image's.
    pub provisioner: Option<String>,
    /// Port of the OS channel on `address` (SSH or WinRM), when it is not the
    /// profile's (e.g. a forwarded port of a local VM).
    #[serde(default, deserialize_with = "port_opt")]
    pub port: Option<u16>,
    /// MAC address, for provisioners that define the machine.
    pub mac: Option<String>,
    /// First boot renews the DHCP lease of every interface (Windows:
    /// `ipconfig /renew`).
    #[serde(default)]
    pub renew_dhcp: bool,
    /// First boot gives this interface a static address and default
    /// gateway (Windows: `netsh interface ip set address`).
    pub static_address: Option<StaticAddress>,
}

/// `static_address = { interface = "Public", address = "192.0.2.7/24", gateway = "192.0.2.1" }`.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticAddress {
    /// The interface's name on the computer (not the one reimage talks
    /// over: its address would change under the channel).
    pub interface: String,
    /// IPv4 address with prefix length.
    pub address: String,
    /// Default gateway.
    pub gateway: Option<String>,
}

/// `[images.NAME]`: what gets loaded and which OS profile brings it up.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// OS profile name: one of `[os.*]` or a built-in (linux, windows-6, ...).
    pub os: String,
    /// Provisioner name, used when the computer names none.
    pub provisioner: Option<String>,
    /// What the provisioner loads: an xCAT osimage, a vSphere template, a
    /// base disk path, an argument to a command.
    pub source: Option<String>,
    /// Attempts for this image, overriding the top-level `max_attempts`.
    pub max_attempts: Option<u32>,
    /// The image was generalized with Sysprep: longer first boot, a reboot.
    #[serde(default)]
    pub sysprep: bool,
    /// The image runs as a virtual machine: shorter waits.
    #[serde(default)]
    pub r#virtual: bool,
    /// Command whose output proves the loaded image is the one asked for.
    pub image_check: Option<ImageCheck>,
    /// Local scripts run on the computer after first-boot configuration.
    #[serde(default)]
    pub post_load: Vec<PathBuf>,
    /// Timeout of each post-load script.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub post_load_timeout: Option<Duration>,
    /// Direct boot (qemu): kernel file.
    pub kernel: Option<PathBuf>,
    /// Direct boot (qemu): initrd file.
    pub initrd: Option<PathBuf>,
    /// Direct boot (qemu): kernel command line; placeholders allowed.
    pub cmdline: Option<String>,
    /// libvirt: domain XML template file.
    pub domain_xml: Option<PathBuf>,
    /// Memory of a VM in MiB.
    pub memory: Option<u32>,
    /// Virtual CPUs of a VM.
    pub cpus: Option<u32>,
}

/// `image_check = { command = [...], expect = "regex" }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ImageCheck {
    /// Run on the computer once its channel answers.
    pub command: Vec<String>,
    /// Regex its standard output must match.
    pub expect: String,
}

/// Which family of OS a profile brings up.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// No OS knowledge: network probes and the steps you list.
    Generic,
    /// Linux over SSH.
    Linux,
    /// Windows XP / Server 2003.
    #[serde(rename = "windows-5")]
    Windows5,
    /// Windows Vista / 2008 / 7 / 2008 R2 / 8 / 2012.
    #[serde(rename = "windows-6")]
    Windows6,
    /// Windows 10 / 11 / Server 2016 and later.
    #[serde(rename = "windows-10")]
    Windows10,
}

impl Family {
    /// The name used in the config and in `reimage check`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Generic => "generic",
            Family::Linux => "linux",
            Family::Windows5 => "windows-5",
            Family::Windows6 => "windows-6",
            Family::Windows10 => "windows-10",
        }
    }

    /// True for the Windows families.
    pub fn is_windows(self) -> bool {
        matches!(
            self,
            Family::Windows5 | Family::Windows6 | Family::Windows10
        )
    }
}

/// How the OS module talks to the computer.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelKind {
    /// SSH (key or password file).
    Ssh,
    /// WS-Management (WinRM).
    Winrm,
    /// Network probes only.
    None,
}

impl ChannelKind {
    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Ssh => "ssh",
            ChannelKind::Winrm => "winrm",
            ChannelKind::None => "none",
        }
    }
}

/// `[os.NAME]`: an OS profile. Every key is optional; what is not set comes
/// from the built-in profile of the same `family` (or the same name).
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct OsConfig {
    /// linux | windows-5 | windows-6 | windows-10 | generic.
    pub family: Option<Family>,
    /// ssh | winrm | none.
    pub channel: Option<ChannelKind>,
    /// Login user.
    pub user: Option<String>,
    /// SSH private key file (ssh-agent when unset and no password file).
    pub key_file: Option<PathBuf>,
    /// File whose first line is the password (SSH or WinRM).
    pub password_file: Option<PathBuf>,
    /// Channel port (22, 5985, 5986).
    #[serde(default, deserialize_with = "port_opt")]
    pub port: Option<u16>,
    /// SSH host-key policy.
    pub host_keys: Option<HostKeyPolicy>,
    /// known_hosts file (default: STATE_DIR/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// Run the family's first-boot configuration.
    pub first_boot: Option<bool>,
    /// Wait for cloud-init to finish (linux).
    pub cloud_init: Option<bool>,
    /// WinRM over HTTPS.
    pub https: Option<bool>,
    /// CA file for WinRM HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification for WinRM (explicit, warned).
    pub insecure: Option<bool>,
    /// WinRM authentication: negotiate (default), ntlm or basic.
    pub auth: Option<WinrmAuth>,
    /// Basic authentication over plain HTTP (explicit, warned).
    pub allow_unencrypted: Option<bool>,
    /// WinRM HTTPS: the listener certificate's SHA-256, or `accept-new`.
    #[serde(default, deserialize_with = "thumbprint_opt")]
    pub thumbprint: Option<Thumbprint>,
    /// File with the Administrator password to set (windows first boot)
    /// instead of a fresh random one.
    pub admin_password_file: Option<PathBuf>,
    /// Set a fresh random password for Administrator (windows) or root
    /// (linux) on every load (default true).
    pub fresh_password: Option<bool>,
    /// Sources (CIDRs or addresses) the first boot opens RDP/SSH and ping
    /// to; default: the management node's own address toward the computer.
    pub allow_from: Option<Vec<String>>,
    /// NTP servers the first boot points the clock at and syncs from.
    pub time_servers: Option<Vec<String>>,
    /// Windows activation: `{ kms = "host[:port]" }` or `{ mak_file = "..." }`.
    pub activation: Option<ActivationConfig>,
    /// Active Directory domain to join at first boot (and leave before a
    /// reload).
    pub domain: Option<DomainConfig>,
    /// The wait sequence, replacing the built-in one.
    pub steps: Option<Vec<StepConfig>>,
    /// Timeouts of steps by step name, over the sequence.
    #[serde(default)]
    pub timeouts: BTreeMap<String, DurationValue>,
    /// How long the computer must keep answering before it is ready.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub stable_for: Option<Duration>,
    /// Connect timeout of one channel attempt.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub connect_timeout: Option<Duration>,
    /// Pause between port or banner probes while the target answers.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub probe_interval: Option<Duration>,
    /// Timeout of one first-boot command.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub command_timeout: Option<Duration>,
}

/// `activation = { kms = "kms.example.edu:1688" }` or `{ mak_file = "..." }`.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActivationConfig {
    /// KMS host, with an optional `:port`.
    pub kms: Option<String>,
    /// File whose first line is a MAK product key (a secret).
    pub mak_file: Option<PathBuf>,
}

/// `domain = { name = "ad.example.edu", ou = "OU=Lab,DC=ad,DC=example,DC=edu", credentials_file = "..." }`.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// The domain's DNS name.
    pub name: String,
    /// Organizational unit for the computer account (distinguished name).
    pub ou: Option<String>,
    /// File: first line the user (`user@domain` or `DOMAIN\\user`), second
    /// line its password.
    pub credentials_file: PathBuf,
}

/// serde: a TCP port, 1 to 65535 (port 0 cannot be connected to).
fn port_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let n = i64::deserialize(d)?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(serde::de::Error::custom(format!(
            "port {n} is not a TCP port: use 1 to 65535"
        ))),
    }
}

/// A duration in a map value position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration::de(d).map(DurationValue)
    }
}

/// What a wait step waits for.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WaitKind {
    /// ICMP echo answered (system `ping`).
    Ping,
    /// TCP connect succeeds.
    Port,
    /// TCP connect and a first line matching `regex`.
    Banner,
    /// The channel authenticates and runs a no-op.
    Login,
    /// A command over the channel until its output matches `regex` (or it
    /// exits 0 when no regex is given).
    Command,
    /// The computer goes down and comes back with a new boot id.
    Reboot,
    /// Windows says its setup is complete: Sysprep's passes are done
    /// (windows families only).
    SetupDone,
    /// Just wait.
    Sleep,
}

impl WaitKind {
    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            WaitKind::Ping => "ping",
            WaitKind::Port => "port",
            WaitKind::Banner => "banner",
            WaitKind::Login => "login",
            WaitKind::Command => "command",
            WaitKind::Reboot => "reboot",
            WaitKind::SetupDone => "setup-done",
            WaitKind::Sleep => "sleep",
        }
    }

    /// True for steps that need a channel other than `none`.
    pub fn needs_channel(self) -> bool {
        matches!(
            self,
            WaitKind::Login | WaitKind::Command | WaitKind::Reboot | WaitKind::SetupDone
        )
    }
}

/// One step of a wait sequence: `{ wait = "port", port = 22, timeout = "10m" }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// What it waits for.
    pub wait: WaitKind,
    /// Name in events and `timeouts` (default: the wait kind).
    pub name: Option<String>,
    /// TCP port (port, banner; default: the channel's).
    #[serde(default, deserialize_with = "port_opt")]
    pub port: Option<u16>,
    /// Give up after this long (grows with the attempt).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub timeout: Option<Duration>,
    /// Give up when nothing changed for this long.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub stall_timeout: Option<Duration>,
    /// banner / command: regex to match.
    pub regex: Option<String>,
    /// command: the argument vector; reboot: what triggers the reboot.
    pub command: Option<Vec<String>>,
    /// sleep: how long.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub duration: Option<Duration>,
    /// When the step times out and the provisioner can reset power: reset
    /// and wait this much longer (Windows 6.x, as Apache VCL does).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub reset_on_timeout: Option<Duration>,
}

/// Checks that need the whole file: references between tables, regexes
/// (steps are checked as each profile resolves); each error names file:line:column.
pub fn validate(l: &Loaded, builtin: &[&str]) -> Result<(), ConfigError> {
    let c = &l.config;
    if c.max_attempts == 0 {
        return Err(l.error_at(&["max_attempts"], "max_attempts must be 1 or more"));
    }
    if !(c.timeout_growth.is_finite() && c.timeout_growth >= 1.0) {
        return Err(l.error_at(&["timeout_growth"], "timeout_growth must be 1.0 or more"));
    }
    if c.logs.keep_runs == 0 {
        return Err(l.error_at(
            &["logs", "keep_runs"],
            "keep_runs must be 1 or more (the run in progress is one)",
        ));
    }
    if let Some(s) = &c.coordination
        && let Err((key, msg)) = s.validate()
    {
        return Err(l.error_at(&["coordination", key], msg));
    }
    for (name, p) in &c.provisioners {
        if !matches!(p.get("kind"), Some(toml::Value::String(_))) {
            return Err(l.error_at(
                &["provisioners", name],
                format!("provisioner `{name}` needs `kind = \"...\"` (a string)"),
            ));
        }
    }
    for (name, os) in &c.os {
        validate_os(l, name, os)?;
    }
    for (name, img) in &c.images {
        if max_zero(img.max_attempts) {
            return Err(l.error_at(
                &["images", name, "max_attempts"],
                "max_attempts must be 1 or more",
            ));
        }
        if !c.os.contains_key(&img.os) && builtin::family_of(&img.os).is_none() {
            return Err(l.error_at(
                &["images", name, "os"],
                format!(
                    "image `{name}` names OS profile `{}`, which is neither an [os.{}] table nor a built-in profile ({})",
                    img.os,
                    img.os,
                    builtin::FAMILIES.join(", ")
                ),
            ));
        }
        if let Some(p) = &img.provisioner {
            check_provisioner(
                l,
                builtin,
                p,
                &["images", name, "provisioner"],
                &format!("image `{name}`"),
            )?;
        }
        if let Some(chk) = &img.image_check {
            if chk.command.is_empty() {
                return Err(l.error_at(
                    &["images", name, "image_check"],
                    "image_check.command is empty",
                ));
            }
            regex::Regex::new(&chk.expect).map_err(|e| {
                l.error_at(
                    &["images", name, "image_check"],
                    format!("image_check.expect is not a valid regex: {e}"),
                )
            })?;
        }
    }
    for (name, comp) in &c.computers {
        if let Err(why) = check_computer_name(name) {
            return Err(l.error_at(&["computers", name], why));
        }
        if comp.address.trim().is_empty() {
            return Err(l.error_at(
                &["computers", name, "address"],
                format!("computer `{name}` has an empty address"),
            ));
        }
        if let Err(why) = check_address(&comp.address) {
            return Err(l.error_at(&["computers", name, "address"], why));
        }
        if let Some(p) = &comp.provisioner {
            check_provisioner(
                l,
                builtin,
                p,
                &["computers", name, "provisioner"],
                &format!("computer `{name}`"),
            )?;
        }
        if let Some(st) = &comp.static_address {
            let v4 = |s: &str| s.parse::<std::net::Ipv4Addr>().is_ok();
            let addr_ok = st
                .address
                .split_once('/')
                .is_some_and(|(a, p)| v4(a) && p.parse::<u8>().is_ok_and(|n| n <= 32));
            let why = if !addr_ok {
                Some((
                    "address",
                    format!(
                        "`{}` is not an IPv4 address with a prefix length (like 192.0.2.7/24)",
                        st.address
                    ),
                ))
            } else if st.gateway.as_deref().is_some_and(|g| !v4(g)) {
                Some(("gateway", "the gateway is not an IPv4 address".to_string()))
            } else if st.interface.is_empty()
                || st.interface.contains(['"', '%', '&', '|', '<', '>', '^'])
            {
                Some((
                    "interface",
                    "the interface name is empty or holds quotes, %, &, |, <, > or ^".to_string(),
                ))
            } else {
                None
            };
            if let Some((k, why)) = why {
                return Err(l.error_at(&["computers", name, "static_address", k], why));
            }
        }
    }
    Ok(())
}

/// The longest computer name (a DNS label's length).
pub const MAX_NAME_LEN: usize = 63;

/// A computer's name becomes a directory and a lock in the state dir, so it
/// must be one plain path component that no other name aliases: letters,
/// digits, `-`, `_` and `.`, starting with a letter or digit, at most
/// [`MAX_NAME_LEN`] bytes.
pub fn check_computer_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok_chars && ok_start && name.len() <= MAX_NAME_LEN {
        return Ok(());
    }
    Err(format!(
        "computer name {name:?} is not allowed: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit (it names a directory in the state dir)"
    ))
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

fn max_zero(v: Option<u32>) -> bool {
    v == Some(0)
}

fn check_provisioner(
    l: &Loaded,
    builtin: &[&str],
    p: &str,
    at: &[&str],
    who: &str,
) -> Result<(), ConfigError> {
    let c = &l.config;
    if c.provisioners.contains_key(p) || builtin.contains(&p) {
        return Ok(());
    }
    let known: Vec<&str> = c
        .provisioners
        .keys()
        .map(String::as_str)
        .chain(builtin.iter().copied())
        .collect();
    Err(l.error_at(
        at,
        format!(
            "{who} names provisioner `{p}`, which is not defined (known: {})",
            known.join(", ")
        ),
    ))
}

fn validate_os(l: &Loaded, name: &str, os: &OsConfig) -> Result<(), ConfigError> {
    if os.family.is_none() && builtin::family_of(name).is_none() && os.steps.is_none() {
        return Err(l.error_at(
            &["os", name],
            format!(
                "OS profile `{name}` needs `family` ({}) or its own `steps`",
                builtin::FAMILIES.join(", ")
            ),
        ));
    }
    for (key, d) in [
        ("connect_timeout", os.connect_timeout),
        ("command_timeout", os.command_timeout),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            return Err(l.error_at(
                &["os", name, key],
                format!("`{key}` of 0s could never succeed: give a duration longer than 0s"),
            ));
        }
    }
    if let Some(d) = os.probe_interval
        && !(builtin::PROBE_INTERVAL_MIN..=builtin::PROBE_INTERVAL_MAX).contains(&d)
    {
        return Err(l.error_at(
            &["os", name, "probe_interval"],
            format!(
                "`probe_interval` must be from {} to {} (at most 25 probes a second per computer)",
                humantime::format_duration(builtin::PROBE_INTERVAL_MIN),
                humantime::format_duration(builtin::PROBE_INTERVAL_MAX)
            ),
        ));
    }
    super::plan::check_channel_keys(l, name, os)?;
    super::plan::check_steps(l, name, os)?;
    check_first_boot_keys(l, name, os)
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
fn plain_host(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// The first-boot keys: addresses parse, host names hold nothing a command
/// line would read as syntax, and the Windows-only keys sit on a Windows
/// profile.
fn check_first_boot_keys(l: &Loaded, name: &str, os: &OsConfig) -> Result<(), ConfigError> {
    let family = os.family.or_else(|| builtin::family_of(name));
    for (i, a) in os.allow_from.iter().flatten().enumerate() {
        if let Err(why) = check_cidr(a) {
            return Err(l.error_at(&["os", name, "allow_from", &i.to_string()], why));
        }
    }
    for (i, t) in os.time_servers.iter().flatten().enumerate() {
        if !plain_host(t) {
            return Err(l.error_at(
                &["os", name, "time_servers", &i.to_string()],
                format!("time server `{t}` is not a host name or address"),
            ));
        }
    }
    let windows = family.is_some_and(Family::is_windows);
    for (key, set) in [
        ("activation", os.activation.is_some()),
        ("domain", os.domain.is_some()),
    ] {
        if set && !windows {
            return Err(l.error_at(
                &["os", name, key],
                format!("`{key}` is a Windows first-boot action, and profile `{name}` is not a windows family"),
            ));
        }
    }
    if let Some(a) = &os.activation {
        match (&a.kms, &a.mak_file) {
            (Some(h), None) if plain_host(h) => {}
            (Some(h), None) => {
                return Err(l.error_at(
                    &["os", name, "activation", "kms"],
                    format!("KMS host `{h}` is not a host name or address"),
                ));
            }
            (None, Some(_)) => {}
            _ => {
                return Err(l.error_at(
                    &["os", name, "activation"],
                    "activation needs exactly one of kms = \"HOST[:PORT]\" and mak_file = \"FILE\"",
                ));
            }
        }
        if family == Some(Family::Windows5) {
            return Err(l.error_at(
                &["os", name, "activation"],
                "Windows XP/2003 has no KMS or MAK activation through slmgr: remove `activation`",
            ));
        }
    }
    if let Some(d) = &os.domain {
        let bad = |s: &str| {
            s.chars()
                .any(|c| matches!(c, '"' | '\'' | '%' | '&' | '|' | '<' | '>' | '^'))
        };
        if !plain_host(&d.name) {
            return Err(l.error_at(
                &["os", name, "domain", "name"],
                format!("domain `{}` is not a DNS name", d.name),
            ));
        }
        if d.ou.as_deref().is_some_and(bad) {
            return Err(l.error_at(
                &["os", name, "domain", "ou"],
                "the OU may not hold quotes, %, &, |, <, > or ^",
            ));
        }
    }
    Ok(())
}

/// How the WinRM channel authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WinrmAuth {
    /// HTTP `Negotiate` with SPNEGO around NTLMv2, every message sealed
    /// (MS-WSMV encryption over HTTP): what Windows accepts as shipped.
    #[default]
    Negotiate,
    /// HTTP `Negotiate` with bare NTLMv2 tokens (no SPNEGO), sealed the
    /// same way: for listeners or proxies that take NTLM only.
    Ntlm,
    /// HTTP Basic: needs Basic enabled on the image, and over plain HTTP
    /// also `allow_unencrypted`.
    Basic,
}

impl WinrmAuth {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            WinrmAuth::Negotiate => "negotiate",
            WinrmAuth::Ntlm => "ntlm",
            WinrmAuth::Basic => "basic",
        }
    }
}

/// `thumbprint`: how the WinRM HTTPS listener's certificate is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thumbprint {
    /// Exactly the certificate with this SHA-256.
    Pinned([u8; 32]),
    /// `accept-new`: learned on first use and kept in the state directory;
    /// a different certificate is accepted only by the first connection
    /// after a load.
    AcceptNew,
}

/// serde: a SHA-256 thumbprint (hex, `:` optional) or `accept-new`.
fn thumbprint_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Thumbprint>, D::Error> {
    let s = String::deserialize(d)?;
    if s == "accept-new" {
        return Ok(Some(Thumbprint::AcceptNew));
    }
    crate::tls::parse_thumbprint(&s)
        .map(|t| Some(Thumbprint::Pinned(t)))
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "{e} (or \"accept-new\": learn it on the first load)"
            ))
        })
}

/// What to do with the computer's SSH host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// The key must already be in the known-hosts file: for standing
    /// machines whose keys never change.
    Strict,
    /// A missing entry is added (trust on first use); a different key is
    /// refused, like OpenSSH's `StrictHostKeyChecking accept-new`.
    AcceptNew,
    /// A freshly loaded computer has new host keys: whatever the file holds
    /// for it is replaced on the first connection this SSH channel makes;
    /// after that the key is pinned, so a different key later in the same
    /// run (say after a reboot step) is refused.
    #[default]
    ReplaceAfterLoad,
}

impl std::str::FromStr for HostKeyPolicy {
    type Err = String;

    /// Parses the config spelling: `strict`, `accept-new`,
    /// `replace-after-load`.
    fn from_str(s: &str) -> Result<HostKeyPolicy, String> {
        match s {
            "strict" => Ok(HostKeyPolicy::Strict),
            "accept-new" => Ok(HostKeyPolicy::AcceptNew),
            "replace-after-load" => Ok(HostKeyPolicy::ReplaceAfterLoad),
            _ => Err(format!(
                "unknown host key policy `{s}`: use strict, accept-new or replace-after-load"
            )),
        }
    }
}
