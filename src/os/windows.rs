//! Windows first-boot configuration (to be completed by the OS-modules work).

use crate::attempt::Attempt;
use crate::config::Plan;
use crate::control::Channel;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// Computer name, RDP and ping rules, sleep, answer files, Administrator password, the image's scripts.
pub fn first_boot(
    _plan: &Plan,
    _attempt: Attempt,
    _ch: &mut dyn Channel,
    _report: &Reporter,
) -> Result<(), Outcome> {
    Ok(())
}
