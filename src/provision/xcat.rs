//! `xcat` provisioner (to be built by its issue).

use serde::Deserialize;

use super::Provisioner;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// `[provisioners.NAME] kind = "xcat"`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct XcatConfig {}

impl XcatConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        Err("the xcat provisioner is not available in this build".into())
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, _plan: &Plan) -> Vec<String> {
        Vec::new()
    }
}

/// The xcat provisioner.
pub struct Xcat;

impl Xcat {
    /// A xcat provisioner.
    pub fn new(_c: XcatConfig) -> Xcat {
        Xcat
    }
}

impl Provisioner for Xcat {
    fn load(&self, _plan: &Plan, _attempt: Attempt, _report: &Reporter) -> Outcome {
        Outcome::Fatal(anyhow::anyhow!(
            "the xcat provisioner is not available in this build"
        ))
    }
}
