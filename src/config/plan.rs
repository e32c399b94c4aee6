//! The resolved plan for one computer and one image: everything the runner,
//! the provisioner and the OS module need, with defaults filled in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults::{COMMAND_TIMEOUT, CONNECT_TIMEOUT, PROBE_INTERVAL};
use super::error::KeyError;
use super::family::{Families, FamilyRules};
use super::loaded::Loaded;
use super::model::{
    ActivationConfig, ChannelKind, Config, DomainConfig, HostKeyPolicy, ImageConfig, OsConfig,
    StaticAddress,
};
use super::step::{self, Probe, Step, Wait};
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
    /// OS family: its rules (the OS floor finds its module by the name).
    pub family: &'static dyn FamilyRules,
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

impl Activation {
    /// The activation `activation = { .. }` asks for (validation made
    /// sure it names exactly one).
    fn of(a: &ActivationConfig) -> Option<Activation> {
        match (&a.kms, &a.mak_file) {
            (Some(h), _) => Some(Activation::Kms(h.clone())),
            (None, Some(f)) => Some(Activation::Mak(f.clone())),
            (None, None) => None,
        }
    }
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
    let profile = profile(c, &l.families, &img.os, img, state_dir).map_err(|e| l.error(&e))?;
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
        computer: ComputerPlan {
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
pub fn profile(
    c: &Config,
    families: &Families,
    name: &str,
    image: &ImageConfig,
    state_dir: &Path,
) -> Result<Profile, KeyError> {
    let none = OsConfig::default();
    let o = c.os.get(name).unwrap_or(&none);
    let family = families.of(name, o);
    let mut steps = match &o.steps {
        Some(_) => profile_steps(families, name, o)?,
        None => family.steps(image),
    };
    set_timeouts(name, o, &mut steps)?;
    if o.cloud_init == Some(true) && !steps.iter().any(|s| s.name == "cloud-init") {
        steps.push(Step::cloud_init());
    }
    Ok(Profile {
        name: name.to_string(),
        family,
        channel: channel_settings(o, family, state_dir),
        first_boot: o
            .first_boot
            .unwrap_or_else(|| family.first_boot_by_default()),
        admin_password_file: o.admin_password_file.clone(),
        fresh_password: o.fresh_password.unwrap_or(true),
        allow_from: o.allow_from.clone().unwrap_or_default(),
        time_servers: o.time_servers.clone().unwrap_or_default(),
        activation: o.activation.as_ref().and_then(Activation::of),
        domain: o.domain.clone(),
        steps,
        stable_for: o.stable_for.unwrap_or_else(|| family.default_stable_for()),
        connect_timeout: o.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
        probe_interval: o.probe_interval.unwrap_or(PROBE_INTERVAL),
        command_timeout: o.command_timeout.unwrap_or(COMMAND_TIMEOUT),
    })
}

/// The channel of profile table `o` of `family`, with its settings.
fn channel_settings(o: &OsConfig, family: &dyn FamilyRules, state_dir: &Path) -> ChannelSettings {
    let kind = o.channel.unwrap_or_else(|| family.default_channel());
    let https = o.https.unwrap_or(false);
    let port = o.port.or_else(|| default_port(kind, https));
    let user = || {
        o.user
            .clone()
            .unwrap_or_else(|| family.default_user().to_string())
    };
    match (kind, port) {
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
        }),
        _ => ChannelSettings::None { port },
    }
}

/// Lays `timeouts = { STEP = ".." }` of profile `name` over `steps`.
fn set_timeouts(name: &str, o: &OsConfig, steps: &mut [Step]) -> Result<(), KeyError> {
    for (step, t) in &o.timeouts {
        let Some(s) = steps.iter_mut().find(|s| &s.name == step) else {
            let known: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            return Err(KeyError::new(
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
    Ok(())
}

/// The family and channel of profile `name` with table `o`.
pub fn family_and_channel(
    families: &Families,
    name: &str,
    o: &OsConfig,
) -> (&'static dyn FamilyRules, ChannelKind) {
    let family = families.of(name, o);
    (
        family,
        o.channel.unwrap_or_else(|| family.default_channel()),
    )
}

/// The steps of `[os.NAME]` (table `o`) as written, each checked, and
/// those that need a channel checked against its channel; errors point at
/// the key in the step's table. The built-in steps of a family that talks
/// over a channel need it too: `channel = "none"` without `steps` is an
/// error there.
pub fn profile_steps(families: &Families, name: &str, o: &OsConfig) -> Result<Vec<Step>, KeyError> {
    let (family, kind) = family_and_channel(families, name, o);
    let steps = match &o.steps {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                step::resolve(s).map_err(|(key, msg)| {
                    KeyError::new(
                        &["os", name, "steps", &i.to_string(), key],
                        format!("os `{name}` step {}: {msg}", i + 1),
                    )
                })
            })
            .collect::<Result<Vec<Step>, KeyError>>()?,
        // Which steps a family has does not depend on the image: only
        // their timeouts do.
        None => family.steps(&ImageConfig::default()),
    };
    for (i, s) in steps.iter().enumerate() {
        if let Err(why) = family.check_wait(name, s.kind()) {
            return Err(KeyError::new(
                &["os", name, "steps", &i.to_string(), "wait"],
                format!("os `{name}` step {}: {why}", i + 1),
            ));
        }
    }
    let needs_channel = steps.iter().position(|s| s.kind().needs_channel());
    if let (ChannelKind::None, Some(i)) = (kind, needs_channel) {
        let msg = format!(
            "os `{name}` step {}: a `{}` step needs channel = \"ssh\" or \"winrm\"",
            i + 1,
            steps[i].kind().name()
        );
        return Err(match &o.steps {
            Some(_) => KeyError::new(&["os", name, "steps", &i.to_string(), "wait"], msg),
            None => KeyError::new(&["os", name, "channel"], msg),
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
    /// profile, every wait step with its timeout at each attempt, and the
    /// first boot (with `first_boot` lines the OS module wrote).
    pub fn describe(&self, provisioner: &[String], first_boot: &[String]) -> String {
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
        let runs = p.first_boot && p.channel.kind() != ChannelKind::None;
        line(format!("  first boot: {}", if runs { "yes" } else { "no" }));
        if runs {
            for l in first_boot {
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
