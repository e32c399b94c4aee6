//! The resolved plan for one computer and one image: everything the runner,
//! the provisioner and the OS module need, with defaults filled in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::builtin::{
    COMMAND_TIMEOUT, CONNECT_TIMEOUT, PROBE_INTERVAL, builtin_steps, cloud_init_step,
    default_channel, default_stable_for, default_user, family_of,
};
use super::model::{ChannelKind, DomainConfig, Family, ImageConfig, OsConfig, StaticAddress};
use super::model::{HostKeyPolicy, Thumbprint, WaitKind, WinrmAuth};
use super::step::{self, Probe, Step, Wait};
use super::{ConfigError, Loaded};
use crate::attempt::Attempt;
use crate::error::Error;

/// The computer as the modules see it.
#[derive(Debug, Clone)]
pub struct ComputerPlan {
    /// Its name in the config.
    pub name: String,
    /// Where it is reached.
    pub address: String,
    /// Its name in the provisioner.
    pub node: String,
    /// Channel port override.
    pub port: Option<u16>,
    /// MAC address, if configured.
    pub mac: Option<String>,
    /// First boot renews the DHCP lease.
    pub renew_dhcp: bool,
    /// First boot sets this static address.
    pub static_address: Option<StaticAddress>,
}

/// The image as the modules see it.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// Its name in the config.
    pub name: String,
    /// What the provisioner loads (default: the image name).
    pub source: String,
    /// The image's table as written.
    pub config: ImageConfig,
}

/// A resolved OS profile: the family's fields, the channel's settings and
/// the wait sequence.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile name.
    pub name: String,
    /// OS family.
    pub family: Family,
    /// The channel and its settings.
    pub channel: ChannelSettings,
    /// Run first-boot configuration.
    pub first_boot: bool,
    /// Administrator password file (windows first boot), instead of a
    /// random one.
    pub admin_password_file: Option<PathBuf>,
    /// A fresh random Administrator/root password on every load.
    pub fresh_password: bool,
    /// Where RDP/SSH and ping are opened to; empty: the management node's
    /// own address toward the computer, found at run time.
    pub allow_from: Vec<String>,
    /// NTP servers; empty: the clock is left alone.
    pub time_servers: Vec<String>,
    /// Windows activation.
    pub activation: Option<Activation>,
    /// Active Directory domain to join.
    pub domain: Option<DomainConfig>,
    /// The wait sequence.
    pub steps: Vec<Step>,
    /// Must keep answering this long before ready.
    pub stable_for: Duration,
    /// Connect timeout of one channel attempt (and of one probe).
    pub connect_timeout: Duration,
    /// Pause between port or banner probes while the target answers.
    pub probe_interval: Duration,
    /// Timeout of one first-boot command.
    pub command_timeout: Duration,
}

/// The provisioner a plan names: its name, its kind, and its table as
/// written (the provisioner decodes it). A built-in name without a table
/// has an empty table and is its own kind.
#[derive(Debug, Clone)]
pub struct ProvisionerRef {
    /// `[provisioners.NAME]`, or a built-in name.
    pub name: String,
    /// The table's `kind`.
    pub kind: String,
    /// The table, without `kind`.
    pub table: toml::Table,
}

/// How Windows is activated at first boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Against this KMS host (`host[:port]`).
    Kms(String),
    /// With the MAK product key in this file.
    Mak(PathBuf),
}

impl ProvisionerRef {
    /// `[provisioners.NAME]` as written: its `kind` taken out of the table.
    pub fn from_table(name: &str, table: &toml::Table) -> ProvisionerRef {
        let mut table = table.clone();
        let kind = match table.remove("kind") {
            Some(toml::Value::String(k)) => k,
            _ => String::new(),
        };
        ProvisionerRef {
            name: name.to_string(),
            kind,
            table,
        }
    }
}

/// How the OS module reaches the computer, with exactly that channel's
/// settings.
#[derive(Debug, Clone)]
pub enum ChannelSettings {
    /// Network probes only; `port` is what port and banner steps probe when
    /// they name none.
    None { port: Option<u16> },
    /// SSH.
    Ssh(SshSettings),
    /// WS-Management.
    Winrm(WinrmSettings),
}

/// An SSH channel's settings.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Port on the computer (before the computer's own `port`).
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key file (ssh-agent when unset and no password file).
    pub key_file: Option<PathBuf>,
    /// Password file.
    pub password_file: Option<PathBuf>,
    /// Host-key policy.
    pub host_keys: HostKeyPolicy,
    /// known_hosts file.
    pub known_hosts: PathBuf,
}

/// A WinRM channel's settings.
#[derive(Debug, Clone)]
pub struct WinrmSettings {
    /// Port on the computer (before the computer's own `port`).
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Password file.
    pub password_file: Option<PathBuf>,
    /// HTTPS instead of HTTP.
    pub https: bool,
    /// CA (or pinned certificate) file for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// HTTPS without verification.
    pub insecure: bool,
    /// How it authenticates.
    pub auth: WinrmAuth,
    /// Basic over plain HTTP was allowed explicitly.
    pub allow_unencrypted: bool,
    /// The HTTPS listener's certificate pin.
    pub thumbprint: Option<Thumbprint>,
}

impl ChannelSettings {
    /// The kind in the config.
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelSettings::None { .. } => ChannelKind::None,
            ChannelSettings::Ssh(_) => ChannelKind::Ssh,
            ChannelSettings::Winrm(_) => ChannelKind::Winrm,
        }
    }

    /// The profile's port of this channel (the computer's `port` wins over
    /// it: see [`Plan::port`]).
    pub fn port(&self) -> Option<u16> {
        match self {
            ChannelSettings::None { port } => *port,
            ChannelSettings::Ssh(s) => Some(s.port),
            ChannelSettings::Winrm(w) => Some(w.port),
        }
    }

    /// The login user, for channels that log in.
    pub fn user(&self) -> Option<&str> {
        match self {
            ChannelSettings::None { .. } => None,
            ChannelSettings::Ssh(s) => Some(&s.user),
            ChannelSettings::Winrm(w) => Some(&w.user),
        }
    }
}

/// How a WinRM channel authenticates and protects its messages, for
/// `check`.
pub fn winrm_summary(w: &WinrmSettings) -> String {
    let transport = if !w.https {
        match w.auth {
            WinrmAuth::Basic => "HTTP, NOT encrypted (allow_unencrypted = true)".to_string(),
            _ => "HTTP, every message encrypted (MS-WSMV)".to_string(),
        }
    } else if w.insecure {
        "HTTPS, certificate NOT verified (insecure = true)".to_string()
    } else if let Some(ca) = &w.ca_file {
        format!("HTTPS, certificate verified against {}", ca.display())
    } else {
        match w.thumbprint {
            Some(Thumbprint::Pinned(t)) => format!(
                "HTTPS, certificate pinned to SHA-256 {}",
                crate::tls::fmt_thumbprint(&t)
            ),
            Some(Thumbprint::AcceptNew) => {
                "HTTPS, certificate pinned as first seen (accept-new; a load may change it)"
                    .to_string()
            }
            None => "HTTPS, certificate verified against the system's roots".to_string(),
        }
    };
    format!("auth {}, {transport}", w.auth.name())
}

/// The port of a channel when the profile names none: 22 for SSH, 5985 for
/// WinRM, 5986 for WinRM over HTTPS; none for channel `none`.
pub fn default_port(kind: ChannelKind, https: bool) -> Option<u16> {
    match kind {
        ChannelKind::Ssh => Some(22),
        ChannelKind::Winrm if https => Some(5986),
        ChannelKind::Winrm => Some(5985),
        ChannelKind::None => None,
    }
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The computer.
    pub computer: ComputerPlan,
    /// The image.
    pub image: ImagePlan,
    /// The provisioner.
    pub provisioner: ProvisionerRef,
    /// The OS profile.
    pub profile: Profile,
    /// Attempts in a provision run.
    pub max_attempts: u32,
    /// Timeout growth per attempt.
    pub growth: f64,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Reservation id, when the scheduler gave one.
    pub reservation: Option<String>,
    /// Where a provisioner takes load slots (the state directory's, or the
    /// coordination store's once the run holds the computer there).
    pub slots: crate::coord::Slots,
}

/// Resolves `computer` and `image` against the config. Unknown names are
/// usage errors (exit 64); inconsistent tables are config errors (exit 78).
pub fn resolve(
    l: &Loaded,
    computer: &str,
    image: &str,
    state_dir: &Path,
    reservation: Option<String>,
) -> Result<Plan, Error> {
    let c = &l.config;
    let comp = c.computers.get(computer).ok_or_else(|| {
        Error::Usage(format!(
            "unknown computer `{computer}`: {} has no [computers.{computer}] (known: {})",
            l.path.display(),
            names(c.computers.keys())
        ))
    })?;
    let img = c.images.get(image).ok_or_else(|| {
        Error::Usage(format!(
            "unknown image `{image}`: {} has no [images.{image}] (known: {})",
            l.path.display(),
            names(c.images.keys())
        ))
    })?;
    let pname = comp.provisioner.clone().or_else(|| img.provisioner.clone()).ok_or_else(|| {
        l.error_at(
            &["images", image],
            format!("neither computer `{computer}` nor image `{image}` names a provisioner: add provisioner = \"NAME\""),
        )
    })?;
    let provisioner = match c.provisioners.get(&pname) {
        Some(t) => ProvisionerRef::from_table(&pname, t),
        None => ProvisionerRef {
            kind: pname.clone(),
            name: pname,
            table: toml::Table::new(),
        },
    };
    let profile = resolve_profile(l, &img.os, img, state_dir)?;
    if profile.channel.port().is_none() && comp.port.is_none() {
        // Channel none and no port anywhere: name what would probe nothing.
        let portless = profile
            .steps
            .iter()
            .position(|s| matches!(&s.wait, Wait::Poll(p, _) if p.takes_channel_port()));
        if let Some(i) = portless {
            let idx = i.to_string();
            return Err(l
                .error_at(
                    &["os", &img.os, "steps", &idx, "wait"],
                    format!(
                        "step `{}` of profile `{}` names no port, and channel none has none: add port = N to the step, or port = N to [computers.{computer}]",
                        profile.steps[i].name, img.os
                    ),
                )
                .into());
        }
        if !profile.stable_for.is_zero() {
            return Err(l
                .error_at(
                    &["os", &img.os, "stable_for"],
                    format!(
                        "profile `{}` checks for {} that the computer keeps answering, but channel none has no port to check: add port = N to [os.{}] or [computers.{computer}]",
                        img.os,
                        crate::duration::fmt(profile.stable_for),
                        img.os
                    ),
                )
                .into());
        }
    }
    Ok(Plan {
        computer: super::ComputerPlan {
            name: computer.to_string(),
            address: comp.address.clone(),
            node: comp.node.clone().unwrap_or_else(|| computer.to_string()),
            port: comp.port,
            mac: comp.mac.clone(),
            renew_dhcp: comp.renew_dhcp,
            static_address: comp.static_address.clone(),
        },
        image: ImagePlan {
            name: image.to_string(),
            source: img.source.clone().unwrap_or_else(|| image.to_string()),
            config: img.clone(),
        },
        provisioner,
        profile,
        max_attempts: img.max_attempts.unwrap_or(c.max_attempts),
        growth: c.timeout_growth,
        state_dir: state_dir.to_path_buf(),
        reservation,
        slots: crate::coord::Slots::local(crate::state::StateDir::new(state_dir)),
    })
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The profile `name` for `image`: the built-in defaults of its family with
/// the `[os.NAME]` keys laid over them, steps checked and resolved.
pub fn resolve_profile(
    l: &Loaded,
    name: &str,
    image: &ImageConfig,
    state_dir: &Path,
) -> Result<Profile, ConfigError> {
    let none = OsConfig::default();
    let user_table = l.config.os.get(name);
    let o = user_table.unwrap_or(&none);
    let family = o
        .family
        .or_else(|| family_of(name))
        .unwrap_or(Family::Generic);
    let kind = o.channel.unwrap_or_else(|| default_channel(family));
    let https = o.https.unwrap_or(false);
    let port = o.port.or_else(|| default_port(kind, https));
    let user = || {
        o.user
            .clone()
            .unwrap_or_else(|| default_user(family).to_string())
    };
    let channel = match (kind, port) {
        (ChannelKind::Ssh, Some(port)) => ChannelSettings::Ssh(SshSettings {
            port,
            user: user(),
            key_file: o.key_file.clone(),
            password_file: o.password_file.clone(),
            host_keys: o.host_keys.unwrap_or(HostKeyPolicy::ReplaceAfterLoad),
            known_hosts: o
                .known_hosts
                .clone()
                .unwrap_or_else(|| state_dir.join("known_hosts")),
        }),
        (ChannelKind::Winrm, Some(port)) => ChannelSettings::Winrm(WinrmSettings {
            port,
            user: user(),
            password_file: o.password_file.clone(),
            https,
            ca_file: o.ca_file.clone(),
            insecure: o.insecure.unwrap_or(false),
            auth: o.auth.unwrap_or_default(),
            allow_unencrypted: o.allow_unencrypted.unwrap_or(false),
            thumbprint: o.thumbprint,
        }),
        _ => ChannelSettings::None { port },
    };
    let mut steps = match &o.steps {
        Some(_) => check_steps(l, name, o)?,
        None => builtin_steps(family, image),
    };
    for (step, t) in &o.timeouts {
        let Some(s) = steps.iter_mut().find(|s| &s.name == step) else {
            let known: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            return Err(l.error_at(
                &["os", name, "timeouts", step],
                if known.is_empty() {
                    format!("profile `{name}` has no step `{step}`: it has no steps")
                } else {
                    format!(
                        "profile `{name}` has no step `{step}` (steps: {})",
                        known.join(", ")
                    )
                },
            ));
        };
        s.set_timeout(t.0);
    }
    if o.cloud_init == Some(true) && !steps.iter().any(|s| s.name == "cloud-init") {
        steps.push(cloud_init_step());
    }
    Ok(Profile {
        name: name.to_string(),
        family,
        channel,
        first_boot: o.first_boot.unwrap_or(family != Family::Generic),
        admin_password_file: o.admin_password_file.clone(),
        fresh_password: o.fresh_password.unwrap_or(true),
        allow_from: o.allow_from.clone().unwrap_or_default(),
        time_servers: o.time_servers.clone().unwrap_or_default(),
        activation: o
            .activation
            .as_ref()
            .and_then(|a| match (&a.kms, &a.mak_file) {
                (Some(h), _) => Some(Activation::Kms(h.clone())),
                (None, Some(f)) => Some(Activation::Mak(f.clone())),
                (None, None) => None,
            }),
        domain: o.domain.clone(),
        steps,
        stable_for: o.stable_for.unwrap_or_else(|| default_stable_for(family)),
        connect_timeout: o.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
        probe_interval: o.probe_interval.unwrap_or(PROBE_INTERVAL),
        command_timeout: o.command_timeout.unwrap_or(COMMAND_TIMEOUT),
    })
}

/// The family and channel of profile `name` with table `o`.
fn family_and_channel(name: &str, o: &OsConfig) -> (Family, ChannelKind) {
    let family = o
        .family
        .or_else(|| family_of(name))
        .unwrap_or(Family::Generic);
    (family, o.channel.unwrap_or_else(|| default_channel(family)))
}

/// The WinRM keys that only work together: one way to trust an HTTPS
/// certificate; a pin only over HTTPS; Basic over plain HTTP only when
/// allowed in so many words, and that allowance nowhere else.
fn check_winrm_keys(l: &Loaded, name: &str, o: &OsConfig) -> Result<(), ConfigError> {
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
        return Err(l.error_at(
            &["os", name, second],
            format!(
                "set one of `ca_file`, `thumbprint` and `insecure = true` in profile `{name}`: they are different ways to trust the listener's certificate (this one sets {})",
                trust.join(" and ")
            ),
        ));
    }
    if o.thumbprint.is_some() && !https {
        return Err(l.error_at(
            &["os", name, "thumbprint"],
            format!(
                "`thumbprint` pins the certificate of an HTTPS listener, and profile `{name}` talks plain HTTP: set https = true, or remove it"
            ),
        ));
    }
    let auth = o.auth.unwrap_or_default();
    match (auth, https, o.allow_unencrypted) {
        (WinrmAuth::Basic, false, Some(true)) => Ok(()),
        (WinrmAuth::Basic, false, _) => Err(l.error_at(
            &["os", name, "auth"],
            format!(
                "auth = \"basic\" over plain HTTP sends the password of profile `{name}` readable by anyone on the path, and Windows refuses it as shipped: leave `auth` out (negotiate: NTLM with every message encrypted, what a stock Windows accepts), use https = true, or set allow_unencrypted = true for a closed lab network"
            ),
        )),
        (_, _, Some(true)) => Err(l.error_at(
            &["os", name, "allow_unencrypted"],
            format!(
                "`allow_unencrypted` lets auth = \"basic\" run over plain HTTP; profile `{name}` uses {} over {}, which it does not change: remove it",
                auth.name(),
                if https { "HTTPS" } else { "HTTP with encrypted messages" }
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses the keys of `[os.NAME]` that its channel does not use (SSH keys
/// on WinRM, WinRM's on SSH, login keys on channel none): one would be
/// ignored silently otherwise.
pub fn check_channel_keys(l: &Loaded, name: &str, o: &OsConfig) -> Result<(), ConfigError> {
    let (_, kind) = family_and_channel(name, o);
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
        return Err(l.error_at(
            &["os", name, key],
            format!(
                "`{key}` is a setting of channel {}, and profile `{name}` talks over channel {}",
                of.name(),
                kind.name()
            ),
        ));
    }
    if kind == ChannelKind::Winrm {
        check_winrm_keys(l, name, o)?;
    }
    let login = [
        ("user", o.user.is_some()),
        ("password_file", o.password_file.is_some()),
    ];
    if let (ChannelKind::None, Some((key, _))) = (kind, login.iter().find(|(_, set)| *set)) {
        return Err(l.error_at(
            &["os", name, key],
            format!(
                "profile `{name}` has channel none, which logs in nowhere: `{key}` is not used"
            ),
        ));
    }
    Ok(())
}

/// The steps of `[os.NAME]` (table `o`) as written, each checked, and
/// those that need a channel checked against its channel; errors point at
/// the key in the step's table. The built-in steps of a family that talks
/// over a channel need it too: `channel = "none"` without `steps` is an
/// error there.
pub fn check_steps(l: &Loaded, name: &str, o: &OsConfig) -> Result<Vec<Step>, ConfigError> {
    let (family, kind) = family_and_channel(name, o);
    let steps = match &o.steps {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                step::resolve(s).map_err(|(key, msg)| {
                    let idx = i.to_string();
                    l.error_at(
                        &["os", name, "steps", &idx, key],
                        format!("os `{name}` step {}: {msg}", i + 1),
                    )
                })
            })
            .collect::<Result<Vec<Step>, ConfigError>>()?,
        // Which steps a family has does not depend on the image: only
        // their timeouts do.
        None => builtin_steps(family, &ImageConfig::default()),
    };
    let setup_done = steps.iter().position(|s| s.kind() == WaitKind::SetupDone);
    if let (false, Some(i)) = (family.is_windows(), setup_done) {
        return Err(l.error_at(
            &["os", name, "steps", &i.to_string(), "wait"],
            format!(
                "os `{name}` step {}: a `setup-done` step asks Windows; profile `{name}` is family {}",
                i + 1,
                family.name()
            ),
        ));
    }
    let needs_channel = steps.iter().position(|s| s.kind().needs_channel());
    if let (ChannelKind::None, Some(i)) = (kind, needs_channel) {
        let msg = format!(
            "os `{name}` step {}: a `{}` step needs channel = \"ssh\" or \"winrm\"",
            i + 1,
            steps[i].kind().name()
        );
        let idx = i.to_string();
        return Err(match &o.steps {
            Some(_) => l.error_at(&["os", name, "steps", &idx, "wait"], msg),
            None => l.error_at(&["os", name, "channel"], msg),
        });
    }
    Ok(steps)
}

impl Plan {
    /// Attempt `number` of `of`, with this plan's timeout growth: the one
    /// place attempts are made.
    pub fn attempt(&self, number: u32, of: u32) -> Attempt {
        Attempt::new(number, of, self.growth)
    }

    /// `base` at every attempt of a `provision` run: "30m, 45m, 1h7m30s".
    pub fn per_attempt(&self, base: Duration) -> String {
        crate::attempt::per_attempt(base, self.max_attempts, self.growth)
    }

    /// The port of the OS channel on the computer's address: the computer's
    /// `port` (a forwarded port of a local VM), else `own`, the profile's.
    /// The one place that decides it (with [`default_port`] for `own`).
    pub fn port_over(&self, own: u16) -> u16 {
        self.computer.port.unwrap_or(own)
    }

    /// [`Plan::port_over`] the profile's port; for channel none without a
    /// port, the computer's `port`, if any.
    pub fn port(&self) -> Option<u16> {
        match self.profile.channel.port() {
            Some(own) => Some(self.port_over(own)),
            None => self.computer.port,
        }
    }

    /// The plan as `reimage check COMPUTER --image IMAGE` prints it: the
    /// provisioner (with `provisioner` lines its module wrote), the OS
    /// profile, and every wait step with its timeout at each attempt.
    pub fn describe(&self, provisioner: &[String]) -> String {
        use crate::duration::fmt;
        let at = |d: Duration| self.per_attempt(d);
        let p = &self.profile;
        let mut s = String::new();
        let mut line = |t: String| {
            s.push_str(&t);
            s.push('\n');
        };
        line(format!(
            "computer: {} (address {}, node {})",
            self.computer.name, self.computer.address, self.computer.node
        ));
        line(format!(
            "image: {} (source {})",
            self.image.name, self.image.source
        ));
        line(format!(
            "attempts: {} (timeouts grow x{} per attempt)",
            self.max_attempts, self.growth
        ));
        line(format!(
            "provisioner: {} (kind {})",
            self.provisioner.name, self.provisioner.kind
        ));
        for d in provisioner {
            line(format!("  {d}"));
        }
        let port = self.port();
        let port_of =
            |own: &Option<u16>| own.or(port).map_or("none".to_string(), |p| p.to_string());
        let port_text = port_of(&None);
        line(format!(
            "os profile: {} (family {}, channel {})",
            p.name,
            p.family.name(),
            p.channel.kind().name()
        ));
        if let Some(user) = p.channel.user() {
            line(format!(
                "  login: {user}@{}:{port_text}",
                self.computer.address
            ));
        }
        if let ChannelSettings::Ssh(ssh) = &p.channel {
            let hk = match ssh.host_keys {
                HostKeyPolicy::Strict => "strict",
                HostKeyPolicy::AcceptNew => "accept-new",
                HostKeyPolicy::ReplaceAfterLoad => "replace-after-load",
            };
            line(format!("  host keys: {hk} ({})", ssh.known_hosts.display()));
        }
        if let ChannelSettings::Winrm(w) = &p.channel {
            line(format!("  winrm: {}", winrm_summary(w)));
        }
        if self.image.config.sysprep || self.image.config.r#virtual {
            line(format!(
                "  image: sysprep={} virtual={}",
                self.image.config.sysprep, self.image.config.r#virtual
            ));
        }
        line("  wait sequence (timeout at attempt 1..n):".into());
        for (i, st) in p.steps.iter().enumerate() {
            let mut d = format!("    {}. {} [{}]", i + 1, st.name, st.kind().name());
            match &st.wait {
                // A sleep does not grow with the attempt (not a timeout).
                Wait::Sleep(t) => d.push_str(&format!(": {} (every attempt)", fmt(*t))),
                Wait::Poll(probe, limits) => {
                    match probe {
                        Probe::Port { port: own } => d.push_str(&format!(" port {}", port_of(own))),
                        Probe::Banner { port: own, regex } => {
                            d.push_str(&format!(" port {} /{regex}/", port_of(own)))
                        }
                        Probe::Command { command, regex } => {
                            d.push_str(&format!(" `{}`", command.join(" ")));
                            if let Some(r) = regex {
                                d.push_str(&format!(" /{r}/"));
                            }
                        }
                        Probe::Reboot {
                            trigger: Some(command),
                        } => d.push_str(&format!(" `{}`", command.join(" "))),
                        Probe::Ping
                        | Probe::Login
                        | Probe::SetupDone
                        | Probe::Reboot { trigger: None } => {}
                    }
                    d.push_str(&format!(": timeout {}", at(limits.timeout)));
                    if let Some(stall) = limits.stall {
                        d.push_str(&format!("; stall {}", at(stall)));
                    }
                    if let Some(r) = limits.reset_on_timeout {
                        d.push_str(&format!("; on timeout: power reset, then {}", at(r)));
                    }
                }
            }
            line(d);
        }
        if p.steps.iter().any(|s| {
            matches!(
                s.wait,
                Wait::Poll(Probe::Port { .. } | Probe::Banner { .. }, _)
            )
        }) {
            let per_min = (60.0 / p.probe_interval.as_secs_f64()).round();
            line(format!(
                "  port probes: every {} while the target answers ({per_min} a minute; probe_interval), pauses doubling to {} while it is silent",
                fmt(p.probe_interval),
                fmt(p.probe_interval.max(Duration::from_secs(2)))
            ));
        }
        line(format!("  stable for: {}", fmt(p.stable_for)));
        match &self.image.config.image_check {
            Some(c) => line(format!(
                "  image check: `{}` must match /{}/",
                c.command.join(" "),
                c.expect
            )),
            None => line("  image check: none".into()),
        }
        line(format!(
            "  boot id check: {}",
            if p.channel.kind() == ChannelKind::None {
                "no (channel none)"
            } else {
                "yes, when the old OS answers before the load"
            }
        ));
        let first_boot = p.first_boot && p.channel.kind() != ChannelKind::None;
        line(format!(
            "  first boot: {}",
            if first_boot { "yes" } else { "no" }
        ));
        if first_boot && (p.family == Family::Linux || p.family.is_windows()) {
            for l in self.first_boot_lines() {
                line(format!("    {l}"));
            }
        }
        if !self.image.config.post_load.is_empty() {
            let scripts: Vec<String> = self
                .image
                .config
                .post_load
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            line(format!("  post-load scripts: {}", scripts.join(", ")));
        }
        s
    }
}

impl Plan {
    /// What the first boot will do, one line each, as `reimage check`
    /// shows it: lockdown, password, scrub, and the optional actions.
    pub fn first_boot_lines(&self) -> Vec<String> {
        let p = &self.profile;
        let windows = p.family.is_windows();
        let from = if p.allow_from.is_empty() && windows {
            "the management node's own address toward the computer".to_string()
        } else if p.allow_from.is_empty() {
            "the management node's own address toward the computer and the address the computer sees the SSH connection come from".to_string()
        } else {
            p.allow_from.join(", ")
        };
        let mut v = Vec::new();
        let (door, port) = if windows {
            ("RDP", "TCP 3389")
        } else {
            ("SSH", "TCP 22")
        };
        v.push(if windows {
            format!("lockdown: {door} ({port}) and ping open only from {from}")
        } else {
            format!("lockdown: {door} ({port}) open only from {from}; ping as the image has it")
        });
        let account = if windows { "Administrator" } else { "root" };
        let file = self
            .state_dir
            .join("computers")
            .join(&self.computer.name)
            .join(password_file_name(p.family));
        match (&p.admin_password_file, p.fresh_password) {
            (Some(f), _) if windows => {
                v.push(format!("password: {account} set from {}", f.display()))
            }
            (_, true) => v.push(format!(
                "password: fresh random {account} password, written to {}",
                file.display()
            )),
            (_, false) => v.push(format!("password: {account} keeps the image's")),
        }
        v.push(if windows {
            "scrub: Sysprep/Panther/unattend answer files removed".to_string()
        } else {
            "scrub: private keys under /root/.ssh removed".to_string()
        });
        if windows {
            v.push(format!(
                "name: renamed to {}, rebooted, name checked",
                self.computer.name
            ));
            v.push("power: sleep and hibernation off".to_string());
        }
        if !p.time_servers.is_empty() {
            v.push(format!("time: synced from {}", p.time_servers.join(", ")));
        }
        match &p.activation {
            Some(Activation::Kms(h)) => v.push(format!("activation: KMS host {h}")),
            Some(Activation::Mak(f)) => v.push(format!("activation: MAK from {}", f.display())),
            None => {}
        }
        if let Some(d) = &p.domain {
            v.push(format!(
                "domain: join {}{} (credentials {}); unjoin before a reload",
                d.name,
                d.ou.as_deref()
                    .map(|o| format!(" in {o}"))
                    .unwrap_or_default(),
                d.credentials_file.display()
            ));
        }
        if windows && self.computer.renew_dhcp {
            v.push("network: DHCP lease renewed".to_string());
        }
        if let (true, Some(s)) = (windows, &self.computer.static_address) {
            v.push(format!(
                "network: {} on `{}`{}",
                s.address,
                s.interface,
                s.gateway
                    .as_deref()
                    .map(|g| format!(", gateway {g}"))
                    .unwrap_or_default()
            ));
        }
        v
    }
}

/// The file under STATE_DIR/computers/NAME/ that holds the password set at
/// the last first boot.
pub fn password_file_name(f: Family) -> &'static str {
    if f.is_windows() {
        "administrator-password"
    } else {
        "root-password"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan for computer `pc` and image `img` of a config whose OS
    /// profile `p` has `os` keys and whose computer has `computer` keys.
    fn plan(os: &str, computer: &str) -> Plan {
        let text = format!(
            "[os.p]\n{os}\n[images.img]\nos = \"p\"\nprovisioner = \"lab\"\n\
             [computers.pc]\naddress = \"10.0.0.7\"\n{computer}\n"
        );
        let l = super::super::parse(Path::new("t.toml"), text, &["lab", "qemu"])
            .expect("config parses");
        resolve(&l, "pc", "img", Path::new("/state"), None).expect("plan resolves")
    }

    #[test]
    fn the_channel_port_has_one_default_and_one_override() {
        let cases = [
            ("family = \"linux\"", "", Some(22)),
            ("family = \"windows-6\"", "", Some(5985)),
            ("family = \"windows-6\"\nhttps = true", "", Some(5986)),
            ("family = \"linux\"\nchannel = \"winrm\"", "", Some(5985)),
            ("family = \"windows-10\"\nport = 15985", "", Some(15985)),
            ("family = \"linux\"", "port = 2222", Some(2222)),
            ("family = \"generic\"", "", None),
            ("family = \"generic\"\nport = 80", "", Some(80)),
            ("family = \"generic\"", "port = 8080", Some(8080)),
        ];
        for (os, computer, want) in cases {
            assert_eq!(plan(os, computer).port(), want, "{os} / {computer}");
        }
    }

    #[test]
    fn channel_settings_carry_only_their_channel() {
        let p = plan(
            "family = \"windows-6\"\nhttps = true\ninsecure = true\nuser = \"admin\"",
            "",
        );
        let ChannelSettings::Winrm(w) = &p.profile.channel else {
            panic!("{:?}", p.profile.channel)
        };
        assert!(w.https && w.insecure && w.user == "admin" && w.port == 5986);
        let p = plan("family = \"linux\"\nhost_keys = \"strict\"", "");
        let ChannelSettings::Ssh(s) = &p.profile.channel else {
            panic!("{:?}", p.profile.channel)
        };
        assert_eq!(s.host_keys, HostKeyPolicy::Strict);
        assert_eq!(s.known_hosts, Path::new("/state/known_hosts"));
        assert_eq!((s.user.as_str(), s.port), ("root", 22));
    }

    #[test]
    fn winrm_defaults_to_negotiate_and_carries_its_pin() {
        let p = plan("family = \"windows-10\"", "");
        let ChannelSettings::Winrm(w) = &p.profile.channel else {
            panic!("{:?}", p.profile.channel)
        };
        assert_eq!(
            (w.auth, w.allow_unencrypted, w.thumbprint),
            (WinrmAuth::Negotiate, false, None)
        );
        assert_eq!(
            winrm_summary(w),
            "auth negotiate, HTTP, every message encrypted (MS-WSMV)"
        );
        let p = plan(
            "family = \"windows-10\"\nauth = \"ntlm\"\nhttps = true\nthumbprint = \"accept-new\"",
            "",
        );
        let ChannelSettings::Winrm(w) = &p.profile.channel else {
            panic!("{:?}", p.profile.channel)
        };
        assert_eq!(
            (w.auth, w.thumbprint),
            (WinrmAuth::Ntlm, Some(Thumbprint::AcceptNew))
        );
        assert!(
            winrm_summary(w).contains("accept-new"),
            "{}",
            winrm_summary(w)
        );
        let pin = "ab".repeat(32);
        let p = plan(
            &format!(
                "family = \"windows-6\"\nauth = \"basic\"\nhttps = true\nthumbprint = \"{pin}\""
            ),
            "",
        );
        let ChannelSettings::Winrm(w) = &p.profile.channel else {
            panic!("{:?}", p.profile.channel)
        };
        assert_eq!(w.thumbprint, Some(Thumbprint::Pinned([0xAB; 32])));
        assert!(
            winrm_summary(w).contains("pinned to SHA-256 AB:AB:"),
            "{}",
            winrm_summary(w)
        );
    }

    #[test]
    fn steps_resolve_to_their_kind() {
        let p = plan(
            "family = \"linux\"\ncloud_init = true\ntimeouts = { banner = \"7s\" }",
            "",
        );
        let kinds: Vec<&str> = p.profile.steps.iter().map(|s| s.kind().name()).collect();
        assert_eq!(kinds, ["port", "banner", "login", "command"]);
        let Wait::Poll(Probe::Banner { port: None, regex }, limits) = &p.profile.steps[1].wait
        else {
            panic!("{:?}", p.profile.steps[1])
        };
        assert!(regex.is_match("SSH-2.0-OpenSSH"));
        assert_eq!(limits.timeout, Duration::from_secs(7));
        let Wait::Poll(Probe::Command { command, regex }, _) = &p.profile.steps[3].wait else {
            panic!("{:?}", p.profile.steps[3])
        };
        assert_eq!(command[0], "cloud-init");
        assert!(regex.as_ref().is_some_and(|r| r.is_match("status: done")));
        let p = plan(
            "family = \"generic\"\nsteps = [{ wait = \"sleep\", timeout = \"3s\" }]",
            "",
        );
        assert!(matches!(p.profile.steps[0].wait, Wait::Sleep(d) if d == Duration::from_secs(3)));
    }
}
