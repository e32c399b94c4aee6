//! Step `load slot`: loads through one management node are limited
//! (`max_concurrent_loads`), counting both reimage's own loads (a
//! semaphore in the state directory) and the installs xCAT itself shows
//! (`nodeset RANGE stat` in `install` or `image` state, as VCL's
//! `_is_throttle_limit_reached` counts), so loads an admin started with
//! `rinstall` or another host started count too.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::answers::{Destiny, XcatError, find_error, node_values};
use super::{Xcat, failure, short, who};
use crate::config::Plan;
use crate::coord::{Slot, SlotClass};
use crate::duration;
use crate::exec::Cmd;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::wait::{self, Backoff};

/// The longest `reimage status` waits for xCAT's answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);

impl Xcat {
    /// The load slots of this management node for `reimage status`, with
    /// the nodes xCAT shows installing or capturing now (`nodeset RANGE
    /// stat`, run once within the command timeout, at most 15 s; no plan, no
    /// events).
    pub(super) fn slot_class_now(&self, name: &str) -> SlotClass {
        let c = &self.config;
        let range = c.limit_noderange.as_str();
        let argv = vec![
            c.command("nodeset").to_string_lossy().into_owned(),
            range.to_string(),
            "stat".to_string(),
        ];
        // A view waits less than a load would.
        let cmd = Cmd::new(&argv, c.command_timeout.min(STATUS_TIMEOUT));
        let shown = cmd.display();
        let loading = match cmd.run() {
            Ok(out) => match find_error(&out.text()) {
                None if out.success() => Ok(node_values(&out.stdout)
                    .into_iter()
                    .filter(|(_, v)| {
                        matches!(Destiny::of(v), Some(Destiny::Install | Destiny::Image))
                    })
                    .map(|(n, _)| n)
                    .collect()),
                Some(e) => Err(format!("`{shown}` said: {}", short(e.text()))),
                None => Err(format!("`{shown}` said: {}", short(&out.text()))),
            },
            Err(e) => Err(format!("`{shown}`: {e:#}")),
        };
        SlotClass {
            class: c.slot_name(),
            title: format!("provisioner `{name}` (xcatd at {})", c.xcatd()),
            max: c.max_concurrent_loads,
            loading,
            free_with: "nodeset {node} boot".into(),
        }
    }

    /// The nodes xCAT shows installing or capturing in `limit_noderange`
    /// (VCL counts `install` and `image` states the same way). Diskless
    /// nodes keep `netboot` for good and are not counted.
    fn xcat_loads(&self, plan: &Plan, report: &Reporter) -> Result<Vec<String>, Outcome> {
        let range = self.config.limit_noderange.as_str();
        let (shown, out, err) = self.ask(plan, report, "nodeset", &[range, "stat"])?;
        if let Some(e) = err {
            return Err(match e {
                XcatError::Daemon(_) => failure(plan, &shown, &out, e),
                e => Outcome::Retry(anyhow::anyhow!(
                    "{}: cannot count the loads xCAT runs: `{shown}` said: {}; check `limit_noderange` of provisioner `{}`",
                    who(plan),
                    short(e.text()),
                    plan.provisioner.name
                )),
            });
        }
        Ok(node_values(&out.stdout)
            .into_iter()
            .filter(|(_, v)| matches!(Destiny::of(v), Some(Destiny::Install | Destiny::Image)))
            .map(|(n, _)| n)
            .collect())
    }

    /// A load slot: one of reimage's own (the semaphore), then room under
    /// the limit counting what xCAT itself runs. Held until the install is
    /// done.
    pub(super) fn take_slot(&self, plan: &Plan, report: &Reporter) -> Result<Slot, Outcome> {
        let c = &self.config;
        let node = plan.computer.node.as_str();
        let max = c.max_concurrent_loads;
        let start = Instant::now();
        report.step("load slot", Some(c.slot_wait));
        let name = c.slot_name();
        let slot = plan
            .slots
            .acquire(&name, max, c.slot_wait, |_| {
                report.progress(&format!(
                    "waiting for a load slot: {max}/{max} busy with reimage's loads"
                ));
            })
            .map_err(|e| Outcome::Fatal(e.context(format!("{}: taking a load slot", who(plan)))))?;
        let no_slot = |busy: &str| {
            report.step_failed("no load slot");
            Outcome::Retry(anyhow::anyhow!(
                "{}: no load slot within {}: {busy} (max_concurrent_loads = {max}); raise `max_concurrent_loads` or `slot_wait` of provisioner `{}`, load fewer computers at once, or set nodes left in install state back with `nodeset NODE boot`",
                who(plan),
                duration::fmt(c.slot_wait),
                plan.provisioner.name
            ))
        };
        let Some(slot) = slot else {
            return Err(no_slot(&format!("{max} loads by reimage")));
        };
        slot.label(node);
        let mut pause = Backoff::new(
            Duration::from_millis(500),
            c.poll_interval.max(Duration::from_millis(500)),
        );
        loop {
            let (busy, said) = self.others(plan, report, &name)?;
            if (busy as u64) < u64::from(max) {
                report.step_done(&format!(
                    "load slot {} of {max} ({said} besides this one)",
                    busy + 1
                ));
                return Ok(slot);
            }
            if start.elapsed() >= c.slot_wait {
                return Err(no_slot(&format!(
                    "{busy} loads run through this management node ({said})"
                )));
            }
            report.progress(&format!("waiting for a load slot: {said} of {max}"));
            wait::pause(pause.next_until(start + c.slot_wait))
                .map_err(|e| Outcome::Fatal(anyhow::anyhow!("{}: {e}", who(plan))))?;
        }
    }

    /// The loads besides this node's that run through this management node
    /// now, xCAT's and reimage's (slot `name`), and the words for them.
    fn others(
        &self,
        plan: &Plan,
        report: &Reporter,
        name: &str,
    ) -> Result<(usize, String), Outcome> {
        let node = plan.computer.node.as_str();
        let xcat = self.xcat_loads(plan, report)?;
        let ours = plan.slots.labels(name);
        let busy: BTreeSet<String> = xcat
            .iter()
            .chain(ours.iter())
            .filter(|n| n.as_str() != node)
            .cloned()
            .collect();
        let outside: Vec<&str> = xcat
            .iter()
            .filter(|n| n.as_str() != node && !ours.contains(n))
            .map(String::as_str)
            .collect();
        let said = if outside.is_empty() {
            format!("{} busy", busy.len())
        } else {
            format!(
                "{} busy, started outside reimage: {}",
                busy.len(),
                outside.join(", ")
            )
        };
        Ok((busy.len(), said))
    }
}
