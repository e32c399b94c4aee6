//! Step `power`: the next boot set to the network as xCAT's `rinstall`
//! does (`rsetboot NODE net`, or `rnetboot NODE` on POWER, by the node's
//! mgt), then `rpower NODE boot` (on when off, reset when on), tried and
//! checked with `rpower NODE stat` until it says on. And `reimage
//! power-off`: `rpower NODE off`.

use std::time::{Duration, Instant};

use super::answers::{
    NetBoot, Power, XcatError, lsdef_attr, no_plugin, node_value, parse_power, status_word,
};
use super::config::SetBoot;
use super::{Xcat, failure, short, tenths, who};
use crate::config::Plan;
use crate::duration;
use crate::outcome::{Outcome, collapse};
use crate::provision::PowerOff;
use crate::report::Reporter;
use crate::wait::{self, Backoff};

/// What one command of a power try came to.
enum Step {
    /// It did what it should: in words.
    Did(String),
    /// It failed in a way another try may mend (BMC busy, xcatd
    /// restarting): why.
    Again(String),
    /// No plugin of the node's mgt has this command: what xCAT said.
    NoCommand(String),
}

impl Xcat {
    /// How this load sets the node's next boot: nothing when `set_boot =
    /// "none"`; else by the node's mgt (`lsdef -i mgt`). A mgt with no
    /// command for it is a warning, not an error.
    pub(super) fn net_boot(&self, plan: &Plan, report: &Reporter) -> Result<NetBoot, Outcome> {
        if self.config.set_boot == SetBoot::None {
            return Ok(NetBoot::Nothing);
        }
        let node = plan.computer.node.as_str();
        let out = self.must(
            plan,
            report,
            "lsdef",
            &["-t", "node", "-o", node, "-i", "mgt"],
        )?;
        let mgt = lsdef_attr(&out.stdout, node, "mgt");
        let way = mgt.as_deref().map_or(NetBoot::Nothing, NetBoot::of_mgt);
        if way == NetBoot::Nothing {
            report.warn(&format!(
                "xCAT node `{node}` has {}: xCAT sets the next boot to the network only for mgt {} (rsetboot) and {} (rnetboot), so the node must boot from the network by itself; set set_boot = \"none\" in provisioner `{}` to say it does",
                mgt.map_or("no mgt".to_string(), |m| format!("mgt `{m}`")),
                NetBoot::Rsetboot.mgts(),
                NetBoot::Rnetboot.mgts(),
                plan.provisioner.name
            ));
        }
        Ok(way)
    }

    /// Powers the node on into its next boot, set to the network by `way`
    /// first: tried up to `power_tries` times, each try checked with
    /// `rpower NODE stat` for up to `power_wait`. Returns what happened, in
    /// words, and the way it took (a command xCAT turned out not to have
    /// leaves `NetBoot::Nothing`, with a warning).
    pub(super) fn power_boot(
        &self,
        plan: &Plan,
        report: &Reporter,
        mut way: NetBoot,
    ) -> Result<(String, NetBoot), Outcome> {
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
            let did = match self.power_try(plan, report, &mut way)? {
                Ok(did) => did,
                Err(said) => {
                    last = said;
                    continue;
                }
            };
            match self.wait_power_on(plan, report)? {
                Ok(()) => {
                    return Ok((
                        format!(
                            "{did}; `rpower {node} stat` says on after {}",
                            duration::fmt(tenths(start.elapsed()))
                        ),
                        way,
                    ));
                }
                Err(p) => last = format!("{did}, but power is `{p}`"),
            }
        }
        Err(Outcome::Retry(anyhow::anyhow!(
            "{}: power is not on after {} tries of {} over {} ({last}); check the node's BMC (`rpower {node} stat`, `rvitals {node}`), or raise `power_tries` / `power_wait`",
            who(plan),
            c.power_tries,
            match way {
                NetBoot::Rnetboot => format!("`rnetboot {node}`"),
                NetBoot::Rsetboot =>
                    format!("`rpower {node} boot` (each after `rsetboot {node} net`)"),
                NetBoot::Nothing => format!("`rpower {node} boot`"),
            },
            duration::fmt(tenths(start.elapsed()))
        )))
    }

    /// One try of [`Self::power_boot`]: the boot device set (`way` falls
    /// back to plain `rpower` when xCAT lacks the command), then the
    /// power-on. What it did, or what went wrong for the next try.
    fn power_try(
        &self,
        plan: &Plan,
        report: &Reporter,
        way: &mut NetBoot,
    ) -> Result<Result<String, String>, Outcome> {
        let mut did = Vec::new();
        if *way == NetBoot::Rsetboot {
            match self.rsetboot(plan, report)? {
                Step::Did(s) => did.push(s),
                Step::Again(s) => {
                    return Ok(Err(s));
                }
                Step::NoCommand(s) => {
                    self.no_command(plan, report, "rsetboot", &s);
                    *way = NetBoot::Nothing;
                }
            }
        }
        let started = if *way == NetBoot::Rnetboot {
            match self.rnetboot(plan, report)? {
                Step::NoCommand(s) => {
                    self.no_command(plan, report, "rnetboot", &s);
                    *way = NetBoot::Nothing;
                    self.rpower_boot(plan, report)?
                }
                s => s,
            }
        } else {
            self.rpower_boot(plan, report)?
        };
        match started {
            Step::Did(s) => did.push(s),
            Step::Again(s) | Step::NoCommand(s) => {
                return Ok(Err(s));
            }
        }
        Ok(Ok(did.join("; ")))
    }

    /// The warning for a node whose mgt has no `cmd` after all.
    fn no_command(&self, plan: &Plan, report: &Reporter, cmd: &str, said: &str) {
        let node = &plan.computer.node;
        report.warn(&format!(
            "xCAT has no `{cmd}` for node `{node}` ({said}): the node must boot from the network by itself; set set_boot = \"none\" in provisioner `{}` to say it does",
            plan.provisioner.name
        ));
    }

    /// `rsetboot NODE net`: done when it reads back `Network`.
    fn rsetboot(&self, plan: &Plan, report: &Reporter) -> Result<Step, Outcome> {
        let node = plan.computer.node.as_str();
        let (shown, out, err) = self.ask(plan, report, "rsetboot", &[node, "net"])?;
        if let Some(e) = err {
            return match e {
                _ if no_plugin(e.text()) => Ok(Step::NoCommand(short(e.text()))),
                XcatError::Other(_) | XcatError::Daemon(_) => Ok(Step::Again(format!(
                    "`{shown}` failed: {}",
                    short(e.text())
                ))),
                e => Err(failure(plan, &shown, &out, e)),
            };
        }
        let cmd = format!("rsetboot {node} net");
        Ok(match node_value(&out.stdout, node) {
            Some(v) if v.eq_ignore_ascii_case("network") => {
                Step::Did(format!("next boot from the network (`{cmd}`: {v})"))
            }
            Some(v) => Step::Again(format!("`{cmd}` answered `{v}`, not `Network`")),
            None => Step::Again(format!("`{cmd}` gave no answer")),
        })
    }

    /// `rnetboot NODE`: the node boots from the network; done on
    /// `Success`.
    fn rnetboot(&self, plan: &Plan, report: &Reporter) -> Result<Step, Outcome> {
        let node = plan.computer.node.as_str();
        let (shown, out, err) = self.ask(plan, report, "rnetboot", &[node])?;
        if let Some(e) = err {
            return match e {
                _ if no_plugin(e.text()) => Ok(Step::NoCommand(short(e.text()))),
                XcatError::Other(_) | XcatError::Daemon(_) => Ok(Step::Again(format!(
                    "`{shown}` failed: {}",
                    short(e.text())
                ))),
                e => Err(failure(plan, &shown, &out, e)),
            };
        }
        let cmd = format!("rnetboot {node}");
        Ok(match node_value(&out.stdout, node) {
            Some(v) if status_word(&v) == "success" => {
                Step::Did(format!("booting from the network (`{cmd}`: {v})"))
            }
            Some(v) => Step::Again(format!("`{cmd}` answered `{v}`")),
            None => Step::Again(format!("`{cmd}` gave no answer")),
        })
    }

    /// `rpower NODE boot`: on when off, reset when on.
    fn rpower_boot(&self, plan: &Plan, report: &Reporter) -> Result<Step, Outcome> {
        let node = plan.computer.node.as_str();
        let (shown, out, err) = self.ask(plan, report, "rpower", &[node, "boot"])?;
        if let Some(e) = err {
            return match e {
                XcatError::Other(_) | XcatError::Daemon(_) => Ok(Step::Again(format!(
                    "`{shown}` failed: {}",
                    short(e.text())
                ))),
                e => Err(failure(plan, &shown, &out, e)),
            };
        }
        Ok(Step::Did(
            match node_value(&out.stdout, node).map(|v| status_word(&v)) {
                Some(v) if v == "on" => "was off: powered on".to_string(),
                Some(v) if v == "reset" => "was on: reset".to_string(),
                Some(v) => format!("rpower boot answered `{v}`"),
                None => "rpower boot gave no answer".to_string(),
            },
        ))
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
        match r {
            Ok(_) => report.step_done("off"),
            Err(_) => report.step_failed("not off"),
        }
        collapse(r)
    }
}
