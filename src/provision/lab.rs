//! `lab`: a standing machine with its OS already installed (Apache VCL's
//! Lab module). There is nothing to load; the OS module still waits for it.

use serde::Deserialize;

use super::Provisioner;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// `[provisioners.NAME] kind = "lab"`: no settings.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {}

/// The lab provisioner.
pub struct Lab;

impl Lab {
    /// A lab provisioner.
    pub fn new(_c: LabConfig) -> Lab {
        Lab
    }
}

impl Provisioner for Lab {
    fn reloads(&self) -> bool {
        false
    }

    fn load(&self, plan: &Plan, _attempt: Attempt, report: &Reporter) -> Outcome {
        report.info(&format!(
            "{} is a standing machine: nothing to load",
            plan.computer.name
        ));
        Outcome::Done
    }

    fn describe(&self, _plan: &Plan) -> Vec<String> {
        vec!["nothing to load: a standing machine".into()]
    }
}
