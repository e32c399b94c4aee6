//! The resolved plan for one computer and one image: everything the runner,
//! the provisioner and the OS module need, with defaults filled in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults::{COMMAND_TIMEOUT, CONNECT_TIMEOUT, PROBE_INTERVAL};
use super::error::KeyError;
use super::family::{Families, FamilyRules};
use super::loaded::Loaded;
use super::model::{
    ActivationValue, ChannelKind, ComputerConfig, Config, DomainConfig, ImageConfig, OsConfig,
    StaticAddress,
};
use super::network::PublicNic;
use super::step::{self, Step, Wait};
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
    /// MAC address of the private interface, if configured.
    pub mac: Option<String>,
    /// The public interface, if configured.
    pub public: Option<PublicNic>,
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
    /// Run first-boot configuration: as the profile or its family says,
    /// and only over a channel that logs in.
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
    /// TCP ports a grant opens besides the family's way in.
    pub ports: Vec<u16>,
    /// Windows activation.
    pub activation: Option<Activation>,
    /// Active Directory domain to join.
    pub domain: Option<DomainConfig>,
    /// DNS servers set before the join; empty: left as they are.
    pub domain_dns: Vec<String>,
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

/// How Windows is activated at first boot: the KMS hosts in order, then
/// the MAK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// A failure fails the load (`activation = "required"`); otherwise it
    /// warns.
    pub required: bool,
    /// KMS hosts (`host[:port]`), tried in order.
    pub kms_hosts: Vec<String>,
    /// The file with the MAK product key, tried last.
    pub mak_file: Option<PathBuf>,
}

impl Activation {
    /// The activation profile table `o` asks for: none when it is `off`
    /// or names no KMS host and no MAK (validation refused the rest).
    fn of(o: &OsConfig) -> Option<Activation> {
        let mode = match &o.activation {
            Some(ActivationValue::Mode(m)) => m.as_str(),
            Some(ActivationValue::Table(_)) => return None,
            None => "best-effort",
        };
        let kms_hosts = o.kms_hosts.clone().unwrap_or_default();
        if mode == "off" || (kms_hosts.is_empty() && o.mak_file.is_none()) {
            return None;
        }
        Some(Activation {
            required: mode == "required",
            kms_hosts,
            mak_file: o.mak_file.clone(),
        })
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
    /// Host-key policy as written (`None`: the SSH channel's default); the
    /// SSH channel decodes it.
    pub host_keys: Option<String>,
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
    /// How it authenticates, as written (`None`: the WinRM channel's
    /// default); the WinRM channel decodes it.
    pub auth: Option<String>,
    /// Basic over plain HTTP was allowed explicitly.
    pub allow_unencrypted: bool,
    /// The HTTPS listener's certificate pin as written; the WinRM channel
    /// decodes it.
    pub thumbprint: Option<String>,
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
    let (comp, img) = find(l, computer, image)?;
    let provisioner = provisioner_of(l, (computer, comp), (image, img))?;
    let profile = profile(c, &l.families, &img.os, img, state_dir).map_err(|e| l.error(&e))?;
    check_port(computer, comp, img, &profile).map_err(|e| l.error(&e))?;
    (profile.family)
        .check_computer(computer, comp)
        .map_err(|e| l.error(&e))?;
    Ok(Plan {
        computer: ComputerPlan::of(computer, comp),
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

/// The tables of `computer` and `image`; a name the file does not have is
/// a usage error.
fn find<'l>(
    l: &'l Loaded,
    computer: &str,
    image: &str,
) -> Result<(&'l ComputerConfig, &'l ImageConfig), Error> {
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
    Ok((comp, img))
}

/// The provisioner that loads `image` onto `computer`: the computer's, else
/// the image's (validation made sure a named one exists).
fn provisioner_of(
    l: &Loaded,
    (computer, comp): (&str, &ComputerConfig),
    (image, img): (&str, &ImageConfig),
) -> Result<ProvisionerRef, Error> {
    let c = &l.config;
    let pname = comp
        .provisioner
        .clone()
        .or_else(|| img.provisioner.clone())
        .ok_or_else(|| {
            l.error_at(
                &["images", image],
                format!("neither computer `{computer}` nor image `{image}` names a provisioner: add provisioner = \"NAME\""),
            )
        })?;
    Ok(match c.provisioners.get(&pname) {
        Some(t) => ProvisionerRef::from_table(&pname, t),
        None => ProvisionerRef {
            kind: pname.clone(),
            name: pname,
            table: toml::Table::new(),
        },
    })
}

/// With channel none and no port anywhere, nothing may need one: no port
/// or banner step without its own port, no stability window.
fn check_port(
    computer: &str,
    comp: &ComputerConfig,
    img: &ImageConfig,
    profile: &Profile,
) -> Result<(), KeyError> {
    if profile.channel.port().is_some() || comp.port.is_some() {
        return Ok(());
    }
    let os = img.os.as_str();
    let portless = profile
        .steps
        .iter()
        .position(|s| matches!(&s.wait, Wait::Poll(p, _) if p.takes_channel_port()));
    if let Some(i) = portless {
        return Err(KeyError::new(
            &["os", os, "steps", &i.to_string(), "wait"],
            format!(
                "step `{}` of profile `{os}` names no port, and channel none has none: add port = N to the step, or port = N to [computers.{computer}]",
                profile.steps[i].name
            ),
        ));
    }
    if !profile.stable_for.is_zero() {
        return Err(KeyError::new(
            &["os", os, "stable_for"],
            format!(
                "profile `{os}` checks for {} that the computer keeps answering, but channel none has no port to check: add port = N to [os.{os}] or [computers.{computer}]",
                crate::duration::fmt(profile.stable_for),
            ),
        ));
    }
    Ok(())
}

impl ComputerPlan {
    /// Computer `name` with table `comp`.
    fn of(name: &str, comp: &ComputerConfig) -> ComputerPlan {
        ComputerPlan {
            name: name.to_string(),
            address: comp.address.clone(),
            node: comp.node.clone().unwrap_or_else(|| name.to_string()),
            port: comp.port,
            mac: comp.mac.clone(),
            // Validated with the file: a refusal never reaches a plan.
            public: super::network::public_nic(comp).ok().flatten(),
            renew_dhcp: comp.renew_dhcp,
            static_address: comp.static_address.clone(),
        }
    }
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
    let channel = channel_settings(o, family, state_dir);
    Ok(Profile {
        name: name.to_string(),
        family,
        first_boot: o
            .first_boot
            .unwrap_or_else(|| family.first_boot_by_default())
            && channel.kind() != ChannelKind::None,
        channel,
        admin_password_file: o.admin_password_file.clone(),
        fresh_password: o.fresh_password.unwrap_or(true),
        allow_from: o.allow_from.clone().unwrap_or_default(),
        time_servers: o.time_servers.clone().unwrap_or_default(),
        ports: o.ports.clone().unwrap_or_default(),
        activation: Activation::of(o),
        domain_dns: o.domain_dns.clone().unwrap_or_default(),
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
            host_keys: o.host_keys.clone(),
            known_hosts: o
                .known_hosts
                .clone()
                .unwrap_or_else(|| crate::state::StateDir::new(state_dir).known_hosts()),
        }),
        (ChannelKind::Winrm, Some(port)) => ChannelSettings::Winrm(WinrmSettings {
            port,
            user: user(),
            password_file: o.password_file.clone(),
            https,
            ca_file: o.ca_file.clone(),
            insecure: o.insecure.unwrap_or(false),
            auth: o.auth.clone(),
            allow_unencrypted: o.allow_unencrypted.unwrap_or(false),
            thumbprint: o.thumbprint.clone(),
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
}
