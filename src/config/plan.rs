//! The resolved plan for one computer and one image: everything the runner,
//! the provisioner and the OS module need, with defaults filled in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::builtin::{builtin_profile, cloud_init_step, family_of};
use super::model::HostKeyPolicy;
use super::model::{ChannelKind, Family, ImageConfig, OsConfig, StepConfig, WaitKind};
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

/// A resolved OS profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile name.
    pub name: String,
    /// OS family.
    pub family: Family,
    /// Channel kind.
    pub channel: ChannelKind,
    /// Login user.
    pub user: String,
    /// SSH key file.
    pub key_file: Option<PathBuf>,
    /// Password file.
    pub password_file: Option<PathBuf>,
    /// Channel port.
    pub port: u16,
    /// SSH host-key policy.
    pub host_keys: HostKeyPolicy,
    /// known_hosts file.
    pub known_hosts: PathBuf,
    /// Run first-boot configuration.
    pub first_boot: bool,
    /// Wait for cloud-init (linux).
    pub cloud_init: bool,
    /// WinRM over HTTPS.
    pub https: bool,
    /// WinRM CA file.
    pub ca_file: Option<PathBuf>,
    /// WinRM without TLS verification.
    pub insecure: bool,
    /// Administrator password file (windows first boot).
    pub admin_password_file: Option<PathBuf>,
    /// The wait sequence.
    pub steps: Vec<StepConfig>,
    /// Must keep answering this long before ready.
    pub stable_for: Duration,
    /// Connect timeout of one channel attempt.
    pub connect_timeout: Duration,
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
        Some(t) => {
            let mut table = t.clone();
            let kind = match table.remove("kind") {
                Some(toml::Value::String(k)) => k,
                _ => String::new(),
            };
            ProvisionerRef {
                name: pname,
                kind,
                table,
            }
        }
        None => ProvisionerRef {
            kind: pname.clone(),
            name: pname,
            table: toml::Table::new(),
        },
    };
    let profile = resolve_profile(l, &img.os, img, state_dir)?;
    Ok(Plan {
        computer: super::ComputerPlan {
            name: computer.to_string(),
            address: comp.address.clone(),
            node: comp.node.clone().unwrap_or_else(|| computer.to_string()),
            port: comp.port,
            mac: comp.mac.clone(),
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

/// The profile `name` for `image`: the built-in profile of its family with
/// the `[os.NAME]` keys laid over it.
pub fn resolve_profile(
    l: &Loaded,
    name: &str,
    image: &ImageConfig,
    state_dir: &Path,
) -> Result<Profile, ConfigError> {
    let user = l.config.os.get(name);
    let family = user
        .and_then(|o| o.family)
        .or_else(|| family_of(name))
        .unwrap_or(Family::Generic);
    let mut p = builtin_profile(family, image, state_dir);
    p.name = name.to_string();
    if let Some(o) = user {
        overlay(&mut p, o);
        for (step, t) in &o.timeouts {
            let Some(s) = p.steps.iter_mut().find(|s| s.name() == step) else {
                let known: Vec<&str> = p.steps.iter().map(|s| s.name()).collect();
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
            if s.wait == super::WaitKind::Sleep {
                s.duration = Some(t.0);
            }
            s.timeout = Some(t.0);
        }
    }
    if p.cloud_init && !p.steps.iter().any(|s| s.name() == "cloud-init") {
        p.steps.push(cloud_init_step());
    }
    Ok(p)
}

fn overlay(p: &mut Profile, o: &OsConfig) {
    if let Some(c) = o.channel {
        if c != p.channel {
            p.port = match c {
                ChannelKind::Ssh => 22,
                ChannelKind::Winrm if o.https == Some(true) => 5986,
                ChannelKind::Winrm => 5985,
                ChannelKind::None => 0,
            };
        }
        p.channel = c;
    }
    if o.https == Some(true) && o.port.is_none() && p.channel == ChannelKind::Winrm {
        p.port = 5986;
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = &o.$f { p.$f = v.clone(); } )* };
    }
    macro_rules! set_opt {
        ($($f:ident),*) => { $( if o.$f.is_some() { p.$f = o.$f.clone(); } )* };
    }
    set!(
        user,
        port,
        host_keys,
        known_hosts,
        first_boot,
        cloud_init,
        https,
        insecure,
        stable_for,
        connect_timeout,
        command_timeout
    );
    set_opt!(key_file, password_file, ca_file, admin_password_file);
    if let Some(steps) = &o.steps {
        p.steps = steps.clone();
    }
}

impl Plan {
    /// Attempt `number` of `of`, with this plan's timeout growth: the one
    /// place attempts are made.
    pub fn attempt(&self, number: u32, of: u32) -> Attempt {
        Attempt::new(number, of, self.growth)
    }

    /// Every attempt of a `provision` run with the plan's attempt count, for
    /// describing timeouts at each attempt.
    pub fn attempts(&self) -> impl Iterator<Item = Attempt> + '_ {
        (1..=self.max_attempts).map(|k| self.attempt(k, self.max_attempts))
    }

    /// The plan as `reimage check COMPUTER --image IMAGE` prints it: the
    /// provisioner (with `provisioner` lines its module wrote), the OS
    /// profile, and every wait step with its timeout at each attempt.
    pub fn describe(&self, provisioner: &[String]) -> String {
        use crate::duration::fmt;
        let at = |d: Duration| -> String {
            self.attempts()
                .map(|a| fmt(a.scale(d)))
                .collect::<Vec<_>>()
                .join(", ")
        };
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
        let port = self.computer.port.unwrap_or(p.port);
        line(format!(
            "os profile: {} (family {}, channel {})",
            p.name,
            p.family.name(),
            p.channel.name()
        ));
        if p.channel != ChannelKind::None {
            line(format!(
                "  login: {}@{}:{}",
                p.user, self.computer.address, port
            ));
        }
        if p.channel == ChannelKind::Ssh {
            let hk = match p.host_keys {
                HostKeyPolicy::Strict => "strict",
                HostKeyPolicy::AcceptNew => "accept-new",
                HostKeyPolicy::ReplaceAfterLoad => "replace-after-load",
            };
            line(format!("  host keys: {hk} ({})", p.known_hosts.display()));
        }
        if self.image.config.sysprep || self.image.config.r#virtual {
            line(format!(
                "  image: sysprep={} virtual={}",
                self.image.config.sysprep, self.image.config.r#virtual
            ));
        }
        line("  wait sequence (timeout at attempt 1..n):".into());
        for (i, st) in p.steps.iter().enumerate() {
            let mut d = format!("    {}. {} [{}]", i + 1, st.name(), st.wait.name());
            match st.wait {
                WaitKind::Port | WaitKind::Banner => {
                    d.push_str(&format!(" port {}", st.port.unwrap_or(port)))
                }
                WaitKind::Command | WaitKind::Reboot => {
                    if let Some(c) = &st.command {
                        d.push_str(&format!(" `{}`", c.join(" ")));
                    }
                }
                _ => {}
            }
            if let Some(r) = &st.regex {
                d.push_str(&format!(" /{r}/"));
            }
            if st.wait == WaitKind::Sleep {
                // A sleep does not grow with the attempt (not a timeout).
                d.push_str(&format!(": {} (every attempt)", fmt(st.base_timeout())));
            } else {
                d.push_str(&format!(": timeout {}", at(st.base_timeout())));
            }
            if let Some(stall) = st.stall_timeout {
                d.push_str(&format!("; stall {}", at(stall)));
            }
            if let Some(r) = st.reset_on_timeout {
                d.push_str(&format!("; on timeout: power reset, then {}", at(r)));
            }
            line(d);
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
            if p.channel == ChannelKind::None {
                "no (channel none)"
            } else {
                "yes, when the old OS answers before the load"
            }
        ));
        line(format!(
            "  first boot: {}",
            if p.first_boot && p.channel != ChannelKind::None {
                "yes"
            } else {
                "no"
            }
        ));
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
