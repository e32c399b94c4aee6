//! `vsphere` provisioner (to be built by its issue).

use serde::Deserialize;

use super::Provisioner;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// `[provisioners.NAME] kind = "vsphere"`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct VsphereConfig {}

impl VsphereConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        Err("the vsphere provisioner is not available in this build".into())
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, _plan: &Plan) -> Vec<String> {
        Vec::new()
    }
}

/// The vsphere provisioner.
pub struct Vsphere;

impl Vsphere {
    /// A vsphere provisioner.
    pub fn new(_c: VsphereConfig) -> Vsphere {
        Vsphere
    }
}

impl Provisioner for Vsphere {
    fn load(&self, _plan: &Plan, _attempt: Attempt, _report: &Reporter) -> Outcome {
        Outcome::Fatal(anyhow::anyhow!(
            "the vsphere provisioner is not available in this build"
        ))
    }
}
