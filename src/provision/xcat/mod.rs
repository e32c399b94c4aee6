//! `xcat`: bare metal through the xCAT 2.x command line on the management
//! node, the way Apache VCL's xCAT.pm does it: point the node's network boot
//! at the osimage (`nodeset NODE osimage=IMAGE`), power it on or reset it
//! (`rpower NODE boot`), then watch the install through `nodestat`,
//! `lsdef -i status` and `nodeset NODE stat` until xCAT shows that the
//! install ran and ended.
//!
//! What xCAT's answers mean, and where that comes from, is in `answers`;
//! when a load is done, in `monitor`.
//!
//! Loads through one management node are limited (`max_concurrent_loads`),
//! counting both reimage's own loads (a semaphore in the state directory)
//! and the installs xCAT itself shows (`nodeset RANGE stat` in `install` or
//! `image` state, as VCL's `_is_throttle_limit_reached` counts), so loads
//! an admin started with `rinstall` or another host started count too.

mod answers;
mod config;
mod monitor;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::Provisioner;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::coord::Slot;
use crate::duration;
use crate::exec::{Cmd, Hints, Output};
use crate::outcome::{Outcome, collapse};
use crate::report::Reporter;
use crate::wait::{self, Limits, Pace, Poll, Waited};
use answers::{ImageKind, Power, XcatError, node_values};
pub use answers::{find_error, lsdef_status, node_value, parse_power, status_word};
pub use config::XcatConfig;
use monitor::{Monitor, Seen, Verdict};

/// The xcat provisioner.
pub struct Xcat {
    config: XcatConfig,
}

/// What running a command gave.
enum RunResult {
    /// It ran: the command line and its output.
    Ran(String, Output),
    /// It could not run or was killed: the outcome.
    Failed(Outcome),
}

/// Who a message is about.
fn who(plan: &Plan) -> String {
    format!(
        "computer `{}` (xCAT node `{}`)",
        plan.computer.name, plan.computer.node
    )
}

impl Xcat {
    /// A xcat provisioner.
    pub fn new(config: XcatConfig) -> Xcat {
        Xcat { config }
    }

    /// Runs one xCAT command with the command timeout. A command that ran
    /// (whatever its exit code) is `Ran`; one that could not start is
    /// fatal, one that hung is retry.
    fn run(&self, plan: &Plan, report: &Reporter, prog: &str, args: &[&str]) -> RunResult {
        let path = self.config.command(prog);
        let mut argv = vec![path.to_string_lossy().into_owned()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let cmd = Cmd::new(&argv, self.config.command_timeout);
        let shown = cmd.display();
        match cmd.run() {
            Ok(out) => RunResult::Ran(shown, out),
            Err(e) => {
                if let Some(p) = e.partial() {
                    report.output(&shown, p);
                }
                let dir = if prog == "nodeset" { "sbin" } else { "bin" };
                let spawn = format!(
                    "xCAT installs {prog} in {dir}/ of its root: set `xcat_root` of provisioner `{}` (default: $XCATROOT, else /opt/xcat) or `{prog}` to the command's path",
                    plan.provisioner.name
                );
                RunResult::Failed(e.into_outcome(
                    &who(plan),
                    &shown,
                    Hints {
                        spawn: &spawn,
                        timeout: "check that xcatd on the management node answers (`lsxcatd -a`)",
                    },
                ))
            }
        }
    }

    /// Runs a command whose output goes to the event log; `Err` with the
    /// outcome when it failed, `Ok` with its output and the error it
    /// printed (if any) otherwise.
    fn ask(
        &self,
        plan: &Plan,
        report: &Reporter,
        prog: &str,
        args: &[&str],
    ) -> Result<(String, Output, Option<XcatError>), Outcome> {
        let (shown, out) = match self.run(plan, report, prog, args) {
            RunResult::Ran(s, o) => (s, o),
            RunResult::Failed(o) => return Err(o),
        };
        report.output(&shown, &out);
        let err = find_error(&out.text());
        let err = match err {
            None if !out.success() => Some(XcatError::Other(short(&out.text()))),
            e => e,
        };
        Ok((shown, out, err))
    }

    /// Runs a command that must succeed. Unknown node or osimage and broken
    /// definitions are fatal, anything else that fails is retry.
    fn must(
        &self,
        plan: &Plan,
        report: &Reporter,
        prog: &str,
        args: &[&str],
    ) -> Result<Output, Outcome> {
        let (shown, out, err) = self.ask(plan, report, prog, args)?;
        match err {
            None => Ok(out),
            Some(e) => Err(failure(plan, &shown, &out, e)),
        }
    }

    /// `rpower NODE boot` (on when off, reset when on), tried up to
    /// `power_tries` times, each try checked with `rpower NODE stat` for up
    /// to `power_wait`. Returns what happened, in words.
    fn power_boot(&self, plan: &Plan, report: &Reporter) -> Result<String, Outcome> {
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
        let mut pause = Duration::from_millis(200);
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
            let name = power_name(&state);
            if Instant::now() >= until {
                return Ok(Err(name));
            }
            report.progress(&format!("power: {name}"));
            wait::pause(pause.min(until.saturating_duration_since(Instant::now())))
                .map_err(|e| Outcome::Fatal(anyhow::anyhow!("{}: {e}", who(plan))))?;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Looks at the node once: nodestat, lsdef status, nodeset stat. A
    /// command that times out or answers with an error gives no value for
    /// this look; an unknown node or image is fatal.
    fn look(&self, plan: &Plan, report: &Reporter, logged: &mut [String; 3]) -> Result<Seen, Poll> {
        let node = plan.computer.node.as_str();
        let calls: [(&str, &[&str]); 3] = [
            ("nodestat", &[node]),
            ("lsdef", &["-t", "node", "-o", node, "-i", "status"]),
            ("nodeset", &[node, "stat"]),
        ];
        let mut seen = Seen::default();
        for (i, (prog, args)) in calls.into_iter().enumerate() {
            let (shown, out) = match self.run(plan, report, prog, args) {
                RunResult::Ran(s, o) => (s, o),
                RunResult::Failed(Outcome::Retry(_)) => {
                    report.progress(&format!(
                        "{prog}: no answer within {}",
                        duration::fmt(self.config.command_timeout)
                    ));
                    continue;
                }
                RunResult::Failed(o) => {
                    return Err(Poll::Fatal(
                        o.error()
                            .map(|e| anyhow::anyhow!("{e:#}"))
                            .unwrap_or_else(|| anyhow::anyhow!("`{prog}` failed")),
                    ));
                }
            };
            let text = out.text();
            if logged[i] != text {
                report.output(&shown, &out);
                logged[i] = text.clone();
            }
            let err = find_error(&text);
            if let Some(e @ (XcatError::UnknownNode(_) | XcatError::UnknownImage(_))) = &err {
                return Err(Poll::Fatal(
                    failure(plan, &shown, &out, e.clone())
                        .error()
                        .map(|e| anyhow::anyhow!("{e:#}"))
                        .unwrap_or_else(|| anyhow::anyhow!("`{shown}` failed")),
                ));
            }
            if let Some(e) = &err {
                report.progress(&format!("{prog}: no answer ({})", short(e.text())));
                continue;
            }
            let value = match prog {
                "lsdef" => lsdef_status(&out.stdout, node),
                _ => node_value(&out.stdout, node),
            };
            match i {
                0 => seen.nodestat = value,
                1 => seen.status = value,
                _ => seen.boot = value,
            }
        }
        Ok(seen)
    }

    fn monitor(
        &self,
        plan: &Plan,
        attempt: Attempt,
        report: &Reporter,
        kind: ImageKind,
    ) -> Result<(), Outcome> {
        let overall = attempt.scale(self.config.overall());
        let stall = attempt.scale(self.config.stall());
        let limits = Limits {
            timeout: overall,
            stall: Some(stall),
        };
        let pace = Pace {
            first: self.config.poll_interval.min(Duration::from_secs(1)),
            max: self.config.poll_interval,
        };
        report.step("install", Some(overall));
        let mut monitor = Monitor::new(kind);
        let mut logged: [String; 3] = Default::default();
        let mut known = Seen::default();
        let mut ended: Option<Verdict> = None;
        let waited = wait::poll(report, limits, pace, |_| {
            let seen = match self.look(plan, report, &mut logged) {
                Ok(s) => s,
                Err(p) => return p,
            };
            known.merge(&seen);
            match monitor.observe(&known) {
                Verdict::Loaded(s) => Poll::Ready(s),
                Verdict::Going(s) => Poll::NotYet(s),
                v => {
                    let s = v.text().to_string();
                    ended = Some(v);
                    Poll::Fatal(anyhow::anyhow!("{s}"))
                }
            }
        });
        let node = &plan.computer.node;
        let who = who(plan);
        let image = &plan.image.source;
        match waited {
            Waited::Ready(s, took) => {
                report.progress(&s);
                report.step_end(
                    true,
                    &format!("installed after {}: {s}", duration::fmt(tenths(took))),
                );
                Ok(())
            }
            Waited::Fatal(e) => {
                report.step_end(false, &format!("{e:#}"));
                match ended {
                    Some(Verdict::Failed(s)) => Err(Outcome::Retry(anyhow::anyhow!(
                        "{who}: xCAT reports the install of osimage `{image}` failed ({s}); see /var/log/xcat/computes.log on the management node"
                    ))),
                    Some(Verdict::Missed(s)) => Err(Outcome::Retry(anyhow::anyhow!(
                        "{who}: the network boot did not happen: the node started the system on its disk instead of installing osimage `{image}` (xCAT never saw the install start; {s}); check that the node boots from the network first, that DHCP answers it (`makedhcp -q {node}`) and the DHCP/TFTP lines for its MAC in /var/log/messages"
                    ))),
                    _ => Err(Outcome::Fatal(e)),
                }
            }
            Waited::Interrupted(i) => {
                report.step_end(false, &i.to_string());
                Err(Outcome::Fatal(anyhow::anyhow!("{who}: {i}")))
            }
            w @ (Waited::TimedOut(_) | Waited::Stalled(..)) => {
                let what = format!("install of osimage `{image}`");
                let text = wait::describe(&w, &what, overall);
                report.step_end(false, &text);
                let hint = match (monitor.install_seen(), monitor.up_without_install()) {
                    (false, Some(apps)) => format!(
                        "; xCAT never saw the install start while the node answered on {apps}: the network boot probably did not happen (check the boot order and `makedhcp -q {node}`)"
                    ),
                    (false, None) => {
                        "; xCAT never saw the install start: watch the node's console".into()
                    }
                    _ => String::new(),
                };
                Err(Outcome::Retry(anyhow::anyhow!(
                    "{who}: {text}{hint}; watch it with `rcons {node}` and `nodestat {node}`"
                )))
            }
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
            .filter(|(_, v)| matches!(status_word(v).as_str(), "install" | "image"))
            .map(|(n, _)| n)
            .collect())
    }

    /// A load slot: one of reimage's own (the semaphore), then room under
    /// the limit counting what xCAT itself runs. Held until the install is
    /// done.
    fn take_slot(&self, plan: &Plan, report: &Reporter) -> Result<Slot, Outcome> {
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
            report.step_end(false, "no load slot");
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
        let mut pause = Duration::from_millis(500);
        loop {
            let xcat = self.xcat_loads(plan, report)?;
            let ours = plan.slots.labels(&name);
            let busy: BTreeSet<String> = xcat
                .iter()
                .chain(ours.iter())
                .filter(|n| n.as_str() != node)
                .cloned()
                .collect();
            let outside: Vec<&String> = xcat
                .iter()
                .filter(|n| n.as_str() != node && !ours.contains(n))
                .collect();
            let said = if outside.is_empty() {
                format!("{} busy", busy.len())
            } else {
                format!(
                    "{} busy, started outside reimage: {}",
                    busy.len(),
                    outside
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            if (busy.len() as u64) < u64::from(max) {
                report.step_end(
                    true,
                    &format!(
                        "load slot {} of {max} ({said} besides this one)",
                        busy.len() + 1
                    ),
                );
                return Ok(slot);
            }
            if start.elapsed() >= c.slot_wait {
                return Err(no_slot(&format!(
                    "{} loads run through this management node ({said})",
                    busy.len()
                )));
            }
            report.progress(&format!("waiting for a load slot: {said} of {max}"));
            let left = c.slot_wait.saturating_sub(start.elapsed());
            wait::pause(pause.min(left))
                .map_err(|e| Outcome::Fatal(anyhow::anyhow!("{}: {e}", who(plan))))?;
            pause = (pause * 2).min(c.poll_interval.max(Duration::from_millis(500)));
        }
    }

    fn load_steps(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Result<(), Outcome> {
        let node = plan.computer.node.as_str();
        report.info(&format!(
            "loading osimage `{}` onto xCAT node `{node}` through {}",
            plan.image.source,
            self.config.root().display()
        ));

        // 1. A load slot on this management node.
        let slot = self.take_slot(plan, report)?;

        // 2. Network boot into the osimage.
        report.step("nodeset", None);
        let osimage = format!("osimage={}", plan.image.source);
        let out = self.must(plan, report, "nodeset", &[node, &osimage])?;
        let state = node_value(&out.stdout, node).unwrap_or_else(|| "install".into());
        let kind = ImageKind::of_state(&state);
        report.step_end(
            true,
            &format!(
                "{state} ({})",
                match kind {
                    ImageKind::Diskful => "installs to disk",
                    ImageKind::Diskless => "diskless",
                }
            ),
        );

        // 3. Power on when off, reset when on.
        report.step("power", None);
        match self.power_boot(plan, report) {
            Ok(did) => report.step_end(true, &did),
            Err(o) => {
                report.step_end(false, "power did not come on");
                return Err(o);
            }
        }

        // 4. Watch the install; the slot is held until it is done.
        let r = self.monitor(plan, attempt, report, kind);
        drop(slot);
        r
    }
}

/// The outcome of a failed xCAT command, with a message that names the
/// computer, node and command, and says what to check.
fn failure(plan: &Plan, shown: &str, out: &Output, err: XcatError) -> Outcome {
    let node = &plan.computer.node;
    let who = who(plan);
    let said = err.text().to_string();
    match err {
        XcatError::UnknownNode(_) => Outcome::Fatal(anyhow::anyhow!(
            "{who}: xCAT does not know node `{node}`: `{shown}` said: {said}; check `lsdef -t node -o {node}` and the computer's `node` key"
        )),
        XcatError::UnknownImage(_) => Outcome::Fatal(anyhow::anyhow!(
            "{who}: xCAT has no usable osimage `{}` (image `{}`): `{shown}` said: {said}; check `lsdef -t osimage` for the image name and the image's `source` key",
            plan.image.source,
            plan.image.name
        )),
        XcatError::Definition(_) => Outcome::Fatal(anyhow::anyhow!(
            "{who}: xCAT cannot set up the load: `{shown}` said: {said}; fix the node or osimage definition (`lsdef {node}`, `lsdef -t osimage {}`)",
            plan.image.source
        )),
        XcatError::Daemon(_) => Outcome::Retry(anyhow::anyhow!(
            "{who}: xcatd does not answer: `{shown}` said: {said}; check that xcatd runs on the management node (`systemctl status xcatd`, `lsxcatd -a`)"
        )),
        XcatError::Other(_) => Outcome::Retry(anyhow::anyhow!(
            "{who}: `{shown}` failed (exit {}): {said}",
            out.code
        )),
    }
}

fn power_name(p: &Power) -> String {
    match p {
        Power::On => "on".into(),
        Power::Off => "off".into(),
        Power::Other(s) => s.clone(),
    }
}

/// An excerpt of xCAT's output for a message, or "no output".
fn short(s: &str) -> String {
    match crate::exec::excerpt(s, 5) {
        t if t.is_empty() => "no output".into(),
        t => t,
    }
}

/// A duration to a tenth of a second, so messages say "1.2s", not "1.234567s".
fn tenths(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

impl Provisioner for Xcat {
    fn describe(&self, plan: &Plan) -> Vec<String> {
        self.config.describe(plan)
    }

    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome {
        collapse(self.load_steps(plan, attempt, report))
    }

    /// `rpower NODE boot`, which powers on a node that is off and resets
    /// one that is on, checked with `rpower NODE stat`.
    fn power_reset(&self, plan: &Plan, _attempt: Attempt, report: &Reporter) -> Option<Outcome> {
        report.step("power reset", None);
        Some(match self.power_boot(plan, report) {
            Ok(did) => {
                report.step_end(true, &did);
                Outcome::Done
            }
            Err(o) => {
                report.step_end(false, "power did not come on");
                o
            }
        })
    }
}
