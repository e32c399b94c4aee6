//! `libvirt` provisioner (to be built by its issue).

use serde::Deserialize;

use super::Provisioner;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// `[provisioners.NAME] kind = "libvirt"`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {}

impl LibvirtConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        Err("the libvirt provisioner is not available in this build".into())
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, _plan: &Plan) -> Vec<String> {
        Vec::new()
    }
}

/// The libvirt provisioner.
pub struct Libvirt;

impl Libvirt {
    /// A libvirt provisioner.
    pub fn new(_c: LibvirtConfig) -> Libvirt {
        Libvirt
    }
}

impl Provisioner for Libvirt {
    fn load(&self, _plan: &Plan, _attempt: Attempt, _report: &Reporter) -> Outcome {
        Outcome::Fatal(anyhow::anyhow!(
            "the libvirt provisioner is not available in this build"
        ))
    }
}
