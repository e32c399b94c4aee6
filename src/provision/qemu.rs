//! `qemu` provisioner (to be built by its issue).

use serde::Deserialize;

use super::Provisioner;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// `[provisioners.NAME] kind = "qemu"`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct QemuConfig {}

impl QemuConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        Err("the qemu provisioner is not available in this build".into())
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, _plan: &Plan) -> Vec<String> {
        Vec::new()
    }
}

/// The qemu provisioner.
pub struct Qemu;

impl Qemu {
    /// A qemu provisioner.
    pub fn new(_c: QemuConfig) -> Qemu {
        Qemu
    }
}

impl Provisioner for Qemu {
    fn load(&self, _plan: &Plan, _attempt: Attempt, _report: &Reporter) -> Outcome {
        Outcome::Fatal(anyhow::anyhow!(
            "the qemu provisioner is not available in this build"
        ))
    }
}
