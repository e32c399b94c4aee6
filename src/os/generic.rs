//! The generic family: no OS knowledge. Network probes and the steps the
//! profile lists; a login channel only when the profile names one (the
//! boot id then read as on Linux), and no first boot.

use std::time::Duration;

use super::sequence::Sequence;
use super::{Family, keys, linux};
use crate::config::WaitKind;
use crate::config::{
    ChannelKind, ComputerConfig, FamilyRules, ImageConfig, KeyError, OsConfig, Plan, Step,
};
use crate::outcome::Outcome;
use crate::state::StateDir;

/// The generic family.
pub struct Generic;

impl FamilyRules for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    fn default_channel(&self) -> ChannelKind {
        ChannelKind::None
    }

    fn default_user(&self) -> &'static str {
        "root"
    }

    fn default_stable_for(&self) -> Duration {
        Duration::ZERO
    }

    fn first_boot_by_default(&self) -> bool {
        false
    }

    fn steps(&self, _image: &ImageConfig) -> Vec<Step> {
        Vec::new()
    }

    fn check_wait(&self, profile: &str, kind: WaitKind) -> Result<(), String> {
        keys::refuse_setup_done(self, profile, kind)
    }

    fn check_keys(&self, profile: &str, os: &OsConfig) -> Result<(), KeyError> {
        keys::check_shared(profile, os)?;
        keys::refuse_windows_keys(profile, os)
    }

    /// No first boot configures a network here: a key that asks for it
    /// is refused rather than ignored. public_mac alone stays (the
    /// provisioner gives the machine that NIC; the image takes DHCP).
    fn check_computer(&self, name: &str, comp: &ComputerConfig) -> Result<(), KeyError> {
        let key = if comp.static_address.is_some() {
            "static_address"
        } else if comp.renew_dhcp {
            "renew_dhcp"
        } else if comp.public_address.is_some() {
            "public_address"
        } else {
            return Ok(());
        };
        Err(KeyError::new(
            &["computers", name, key],
            format!(
                "computer `{name}`: `{key}` asks the first boot to configure a network, and the generic family has none: use a linux or windows profile, or remove `{key}`"
            ),
        ))
    }
}

impl Family for Generic {
    fn boot_id_command(&self) -> Vec<String> {
        linux::Linux.boot_id_command()
    }

    fn first_boot_lines(&self, _plan: &Plan) -> Vec<String> {
        Vec::new()
    }

    fn first_boot(&self, _seq: &mut Sequence, _state: &StateDir) -> Result<(), Outcome> {
        Ok(())
    }
}
