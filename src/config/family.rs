//! What an OS family tells the configuration: its name, its defaults and
//! the keys it takes. Each family under `src/os/` implements
//! [`FamilyRules`]; the top floor hands their list to [`super::load`], as
//! it hands down the provisioners' names, so config itself names no family
//! and holds none of their rules (Packer's `Prepare` rule, as for the
//! `[provisioners.NAME]` tables).

use std::fmt;
use std::time::Duration;

use super::error::KeyError;
use super::model::{ChannelKind, ComputerConfig, ImageConfig, OsConfig, WaitKind};
use super::step::Step;

/// One OS family's rules, as the configuration needs them to check and
/// resolve an `[os.NAME]` profile.
pub trait FamilyRules: Sync {
    /// The name in `family = "..."`, and of the family's built-in profile.
    fn name(&self) -> &'static str;

    /// The channel a profile talks over unless it says otherwise.
    fn default_channel(&self) -> ChannelKind;

    /// The login user unless the profile says otherwise.
    fn default_user(&self) -> &'static str;

    /// How long the computer must keep answering before it is ready,
    /// unless the profile says otherwise.
    fn default_stable_for(&self) -> Duration;

    /// Whether the family's first boot runs unless the profile says
    /// otherwise.
    fn first_boot_by_default(&self) -> bool;

    /// The built-in wait sequence for `image` (its timings may depend on
    /// the image being virtual or generalized).
    fn steps(&self, image: &ImageConfig) -> Vec<Step>;

    /// Whether profile `profile` of this family may have a wait step of
    /// `kind`; Err says why not.
    fn check_wait(&self, profile: &str, kind: WaitKind) -> Result<(), String>;

    /// Checks the keys of profile `profile` (table `os`) that the family
    /// decides on: those it refuses, and the values only it can judge. Err
    /// names the key inside the table.
    fn check_keys(&self, profile: &str, os: &OsConfig) -> Result<(), KeyError>;

    /// Checks the network keys of `[computers.NAME]` (`renew_dhcp`,
    /// `static_address`) against what the family's first boot does with
    /// them: a key it would ignore is refused. Err names the key under
    /// `computers.NAME`.
    fn check_computer(&self, _name: &str, _comp: &ComputerConfig) -> Result<(), KeyError> {
        Ok(())
    }
}

impl fmt::Debug for dyn FamilyRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "family {}", self.name())
    }
}

/// The OS families the top floor hands down.
#[derive(Debug, Clone)]
pub struct Families {
    /// Every family, in the order messages list them.
    pub all: Vec<&'static dyn FamilyRules>,
    /// The family of a profile that names none and is no built-in one
    /// (it brings its own `steps`).
    pub default: &'static dyn FamilyRules,
}

impl Families {
    /// The family named `name`.
    pub fn get(&self, name: &str) -> Option<&'static dyn FamilyRules> {
        self.all.iter().copied().find(|f| f.name() == name)
    }

    /// Every family's name, for messages: "generic, linux, ...".
    pub fn names(&self) -> String {
        let v: Vec<&str> = self.all.iter().map(|f| f.name()).collect();
        v.join(", ")
    }

    /// The family of profile `name` with table `o`: its `family`, else the
    /// built-in profile of that name's, else the default one. A `family`
    /// no family answers to is refused by validation before this is asked.
    pub fn of(&self, name: &str, o: &OsConfig) -> &'static dyn FamilyRules {
        o.family
            .as_deref()
            .and_then(|f| self.get(f))
            .or_else(|| self.get(name))
            .unwrap_or(self.default)
    }
}
