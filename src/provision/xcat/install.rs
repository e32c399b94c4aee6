//! Step `install`: watch the node through nodestat, lsdef status and
//! nodeset stat until xCAT shows that the install ran and ended (the
//! decision is `monitor`'s).

use std::time::Duration;

use super::answers::{ImageKind, XcatError, find_error, lsdef_status, node_value};
use super::monitor::{Monitor, Seen, Verdict};
use super::{RunResult, Xcat, failure, short, tenths, who};
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::duration;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::wait::{self, Limits, Pace, Poll, Waited};

impl Xcat {
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

    pub(super) fn monitor(
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
}
