//! Step `power`: `rpower NODE boot` (on when off, reset when on), tried
//! and checked with `rpower NODE stat` until it says on. And `reimage
//! power-off`: `rpower NODE off`.

use std::time::{Duration, Instant};

use super::answers::{Power, XcatError, node_value, parse_power, status_word};
use super::{Xcat, failure, short, tenths, who};
use crate::config::Plan;
use crate::duration;
use crate::outcome::{Outcome, collapse};
use crate::provision::PowerOff;
use crate::report::Reporter;
use crate::wait::{self, Backoff};

impl Xcat {
    /// `rpower NODE boot` (on when off, reset when on), tried up to
    /// `power_tries` times, each try checked with `rpower NODE stat` for up
    /// to `power_wait`. Returns what happened, in words.
    pub(super) fn power_boot(&self, plan: &Plan, report: &Reporter) -> Result<String, Outcome> {
        let c = &self.config;
        let node = plan.computer.node.as_str();
        let start = Instant::now();
        let mut last = String::from("no answer");
        for t in 1..=c.power_tries {
            if t > 1 {
                // VCL waits a moment between rpower tries too.
                let pause = Duration::from_secs(u64::from(t - 1).min(5));
                report.progress(&format!(
                    "try {t} of {} in {}: {last}",
                    c.power_tries,
                    duration::fmt(pause)
                ));
                wait::pause(pause)
                    .map_err(|e| Outcome::Fatal(anyhow::anyhow!("{}: {e}", who(plan))))?;
            }
            let (shown, out, err) = self.ask(plan, report, "rpower", &[node, "boot"])?;
            if let Some(e) = err {
                match e {
                    XcatError::Other(_) | XcatError::Daemon(_) => {
                        last = format!("`{shown}` failed: {}", short(e.text()));
                        continue;
                    }
                    e => return Err(failure(plan, &shown, &out, e)),
                }
            }
            let did = match node_value(&out.stdout, node).map(|v| status_word(&v)) {
                Some(v) if v == "on" => "was off: powered on".to_string(),
                Some(v) if v == "reset" => "was on: reset".to_string(),
                Some(v) => format!("rpower boot answered `{v}`"),
                None => "rpower boot gave no answer".to_string(),
            };
            match self.wait_power_on(plan, report)? {
                Ok(()) => {
                    return Ok(format!(
                        "{did}; `rpower {node} stat` says on after {}",
                        duration::fmt(tenths(start.elapsed()))
                    ));
                }
                Err(p) => last = format!("{did}, but power is `{p}`"),
            }
        }
        Err(Outcome::Retry(anyhow::anyhow!(
            "{}: power is not on after {} tries of `rpower {node} boot` over {} ({last}); check the node's BMC (`rpower {node} stat`, `rvitals {node}`), or raise `power_tries` / `power_wait`",
            who(plan),
            c.power_tries,
            duration::fmt(tenths(start.elapsed()))
        )))
    }

    /// Polls `rpower NODE stat` until it says on, for up to `power_wait`:
    /// `Ok(Err(last state))` when it did not.
    fn wait_power_on(&self, plan: &Plan, report: &Reporter) -> Result<Result<(), String>, Outcome> {
        let node = plan.computer.node.as_str();
        let until = Instant::now() + self.config.power_wait;
        let mut pause = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let (shown, out, err) = self.ask(plan, report, "rpower", &[node, "stat"])?;
            let state = match err {
                None => node_value(&out.stdout, node)
                    .map(|v| parse_power(&v))
                    .unwrap_or(Power::Other("no answer".into())),
                Some(e @ (XcatError::Other(_) | XcatError::Daemon(_))) => {
                    Power::Other(format!("error: {}", short(e.text())))
                }
                Some(e) => return Err(failure(plan, &shown, &out, e)),
            };
            if state == Power::On {
                return Ok(Ok(()));
            }
            let name = state.name().to_string();
            if Instant::now() >= until {
                return Ok(Err(name));
            }
            report.progress(&format!("power: {name}"));
            wait::pause(pause.next_until(until))
                .map_err(|e| Outcome::Fatal(anyhow::anyhow!("{}: {e}", who(plan))))?;
        }
    }
}

/// `reimage power-off`: `rpower NODE off` (plugins/ipmi.pm answers `NODE:
/// off`, also for a node that was off); an unknown node is fatal, xcatd
/// not answering retry, as for a load.
impl PowerOff for Xcat {
    fn off(&self, plan: &Plan, report: &Reporter) -> Outcome {
        let node = plan.computer.node.as_str();
        report.step("power off", None);
        let r = self
            .ask(plan, report, "rpower", &[node, "off"])
            .and_then(|(shown, out, err)| match err {
                Some(e) => Err(failure(plan, &shown, &out, e)),
                None => match node_value(&out.stdout, node).map(|v| status_word(&v)) {
                    Some(v) if v == "off" => Ok(()),
                    v => Err(Outcome::Retry(anyhow::anyhow!(
                        "{}: `{shown}` answered {}, not `off`; check the node's BMC (`rpower {node} stat`)",
                        who(plan),
                        v.map(|v| format!("`{v}`")).unwrap_or_else(|| "nothing".into())
                    ))),
                },
            });
        report.step_end(r.is_ok(), if r.is_ok() { "off" } else { "not off" });
        collapse(r)
    }
}
