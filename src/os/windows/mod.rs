//! Windows, from XP/2003 to 11/2022, over WinRM (or SSH where the image
//! runs an SSH server), after Apache VCL's Windows modules (Windows.pm,
//! Version_5.pm, Version_6.pm): everything reimage knows of Windows is in
//! this folder.
//!
//! - [`commands`]: the command lines each family's stock install runs and
//!   what their output means (a leaf: the wait sequence and the first boot
//!   both use it), with the scripts of this folder (`*.vbs`, `*.ps1`);
//! - `first_boot`: the first configuration, as named steps;
//! - [`before_load`]: leaving the domain before a reload.

pub mod commands;
mod first_boot;

pub use first_boot::first_boot;

use crate::config::Plan;
use crate::control::Channel;
use crate::report::Reporter;
use commands::{domain_query, joined_domain, unjoin_command, wmi_result};

/// Before a reload: when the profile joins a domain and the old OS is a
/// member, leave the domain so no stale membership lingers (VCL's
/// Windows.pm pre_reload). Best effort: a computer that does not answer is
/// reloaded anyway.
pub fn before_load(plan: &Plan, ch: &mut dyn Channel, report: &Reporter) {
    let Some(d) = &plan.profile.domain else {
        return;
    };
    let t = plan.profile.command_timeout;
    report.step("unjoin-domain", Some(t));
    let joined = match ch.run(&domain_query(), t) {
        Ok(o) => joined_domain(&o.stdout),
        Err(e) => {
            report.step_end(false, &format!("cannot ask the old OS: {e}"));
            return;
        }
    };
    let Some(j) = joined else {
        report.step_end(true, "not a domain member");
        return;
    };
    match ch.run(&unjoin_command(), t) {
        Ok(o) => match wmi_result(&o) {
            Ok(_) => report.step_end(true, &format!("left {j} (configured: {})", d.name)),
            Err(why) => report.step_end(false, &format!("could not leave {j}: {why}")),
        },
        Err(e) => report.step_end(false, &format!("could not leave {j}: {e}")),
    }
}
