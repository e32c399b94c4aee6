//! Provisioning modules: put the image on the computer and start it. A
//! provisioner never logs in to the OS; the OS module does that.

pub mod command;
pub mod lab;
pub mod libvirt;
pub mod qemu;
pub mod vsphere;
pub mod xcat;

use serde::Deserialize;

use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// Provisioner names that exist without a `[provisioners.NAME]` table.
pub const BUILTIN: [&str; 2] = ["lab", "qemu"];

/// The configuration of a built-in provisioner name.
pub fn builtin_config(name: &str) -> Option<ProvisionerConfig> {
    match name {
        "lab" => Some(ProvisionerConfig::Lab(lab::LabConfig::default())),
        "qemu" => Some(ProvisionerConfig::Qemu(qemu::QemuConfig::default())),
        _ => None,
    }
}

/// `[provisioners.NAME]`, by `kind`.
#[derive(Debug, Deserialize, Clone)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProvisionerConfig {
    /// Any external command whose exit code follows the contract.
    Command(command::CommandConfig),
    /// A standing machine: nothing to load.
    Lab(lab::LabConfig),
    /// A local QEMU VM.
    Qemu(qemu::QemuConfig),
    /// A libvirt domain through virsh.
    Libvirt(libvirt::LibvirtConfig),
    /// Bare metal through xCAT.
    Xcat(xcat::XcatConfig),
    /// A VM on an ESXi host or vCenter through the vSphere SOAP API.
    Vsphere(Box<vsphere::VsphereConfig>),
}

impl ProvisionerConfig {
    /// The kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            ProvisionerConfig::Command(_) => "command",
            ProvisionerConfig::Lab(_) => "lab",
            ProvisionerConfig::Qemu(_) => "qemu",
            ProvisionerConfig::Libvirt(_) => "libvirt",
            ProvisionerConfig::Xcat(_) => "xcat",
            ProvisionerConfig::Vsphere(_) => "vsphere",
        }
    }

    /// Checks serde cannot make (empty commands, ranges).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ProvisionerConfig::Command(c) => c.validate(),
            ProvisionerConfig::Lab(_) => Ok(()),
            ProvisionerConfig::Qemu(c) => c.validate(),
            ProvisionerConfig::Libvirt(c) => c.validate(),
            ProvisionerConfig::Xcat(c) => c.validate(),
            ProvisionerConfig::Vsphere(c) => c.validate(),
        }
    }

    /// Lines for `reimage check`: the settings that shape a load, with the
    /// timeout at each attempt.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        match self {
            ProvisionerConfig::Command(c) => c.describe(plan),
            ProvisionerConfig::Lab(_) => vec!["nothing to load: a standing machine".into()],
            ProvisionerConfig::Qemu(c) => c.describe(plan),
            ProvisionerConfig::Libvirt(c) => c.describe(plan),
            ProvisionerConfig::Xcat(c) => c.describe(plan),
            ProvisionerConfig::Vsphere(c) => c.describe(plan),
        }
    }
}

/// Puts an image on a computer and starts it.
pub trait Provisioner {
    /// Loads the plan's image onto its computer, attempt `attempt`. Done when
    /// the image is loaded and the computer is starting; never waits for the
    /// OS.
    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome;

    /// False for provisioners that leave the running OS in place (`lab`):
    /// the OS module then does not expect a new boot id after the load.
    fn reloads(&self) -> bool {
        true
    }

    /// Resets the computer's power, for OS profiles that do so when a first
    /// wait fails. `None` when this provisioner cannot.
    fn power_reset(&self, _plan: &Plan, _report: &Reporter) -> Option<Outcome> {
        None
    }
}

/// The provisioner the plan names.
pub fn build(plan: &Plan) -> Box<dyn Provisioner> {
    match &plan.provisioner.1 {
        ProvisionerConfig::Command(c) => Box::new(command::CommandProvisioner::new(c.clone())),
        ProvisionerConfig::Lab(c) => Box::new(lab::Lab::new(c.clone())),
        ProvisionerConfig::Qemu(c) => Box::new(qemu::Qemu::new(c.clone())),
        ProvisionerConfig::Libvirt(c) => Box::new(libvirt::Libvirt::new(c.clone())),
        ProvisionerConfig::Xcat(c) => Box::new(xcat::Xcat::new(c.clone())),
        ProvisionerConfig::Vsphere(c) => Box::new(vsphere::Vsphere::new((**c).clone())),
    }
}

/// The placeholder values of a plan at an attempt: `{computer} {node}
/// {address} {image} {source} {attempt} {attempts} {reservation}`.
pub fn placeholders(plan: &Plan, attempt: Attempt) -> Vec<(&'static str, String)> {
    vec![
        ("computer", plan.computer.name.clone()),
        ("node", plan.computer.node.clone()),
        ("address", plan.computer.address.clone()),
        ("image", plan.image.name.clone()),
        ("source", plan.image.source.clone()),
        ("attempt", attempt.number.to_string()),
        ("attempts", attempt.of.to_string()),
        ("reservation", plan.reservation.clone().unwrap_or_default()),
    ]
}

/// Replaces `{name}` placeholders in `s`; `{{` and `}}` stand for braces.
pub fn expand(s: &str, values: &[(&'static str, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some((name, after)) = tail.strip_prefix('{').and_then(|t| t.split_once('}')) {
            match values.iter().find(|(k, _)| *k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            }
            rest = after;
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_placeholders_and_escapes() {
        let v = vec![("node", "pc7".to_string()), ("attempt", "2".to_string())];
        assert_eq!(expand("{node}-{attempt}", &v), "pc7-2");
        assert_eq!(expand("{{node}} {unknown}", &v), "{node} {unknown}");
        assert_eq!(expand("a}b{", &v), "a}b{");
    }
}
