//! Step `install`: watch the node through nodestat, lsdef status and
//! nodeset stat until xCAT shows that the install ran and ended (the
//! decision is `monitor`'s).

use std::time::Duration;

use super::answers::{ImageKind, NetBoot, XcatError, find_error, lsdef_status, node_value};
use super::monitor::{Monitor, Seen, Verdict};
use super::{RunResult, Xcat, failure, short, tenths, who};
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::duration;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::wait::{self, Limits, Pace, Poll};

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

    /// Watches the install (step `install`) until xCAT shows it ran and
    /// ended; a failed install, a missed network boot, a timeout and a
    /// stall ask for a retry.
    pub(super) fn monitor(
        &self,
        plan: &Plan,
        attempt: Attempt,
        report: &Reporter,
        kind: ImageKind,
        way: NetBoot,
    ) -> Result<(), Outcome> {
        let overall = attempt.scale(self.config.overall());
        let limits = Limits {
            timeout: overall,
            stall: Some(attempt.scale(self.config.stall())),
        };
        let pace = Pace {
            first: self.config.poll_interval.min(Duration::from_secs(1)),
            max: self.config.poll_interval,
        };
        report.step("install", Some(overall));
        let mut watch = Watch::new(kind, way);
        let waited = wait::poll(report, limits, pace, |_| watch.look(self, plan, report));
        let what = format!("install of image `{}`", plan.image.name);
        match waited.into_outcome(&what, overall, report) {
            Ok((s, took)) => {
                report.progress(&s);
                report.step_done(&format!(
                    "installed after {}: {s}",
                    duration::fmt(tenths(took))
                ));
                Ok(())
            }
            Err(o) => Err(watch.failure(plan, self, o)),
        }
    }
}

/// What watching an install keeps between looks.
struct Watch {
    monitor: Monitor,
    /// The output last logged of each status command: the event log gets
    /// an answer again only when it changed.
    logged: [String; 3],
    /// The last answer of each command.
    known: Seen,
    /// Why the monitor ended the wait early: the install failed or never
    /// started.
    ended: Option<Verdict>,
    /// How the power step set the next boot.
    way: NetBoot,
}

impl Watch {
    fn new(kind: ImageKind, way: NetBoot) -> Watch {
        Watch {
            monitor: Monitor::new(kind),
            logged: Default::default(),
            known: Seen::default(),
            ended: None,
            way,
        }
    }

    /// What set the next boot, and what to check, for a node that booted
    /// its disk instead of the network.
    fn boot_hint(&self, plan: &Plan, x: &Xcat) -> String {
        let node = &plan.computer.node;
        match self.way {
            NetBoot::Rsetboot => format!(
                "`rsetboot {node} net` had set the next boot to the network: check the BMC's boot override (`rsetboot {node} stat`)"
            ),
            NetBoot::Rnetboot => format!(
                "`rnetboot {node}` had booted it from the network: check the partition's boot list on the HMC"
            ),
            NetBoot::Nothing if x.config.set_boot == super::config::SetBoot::None => format!(
                "nothing set its next boot (set_boot = \"none\"), and a UEFI node boots the system its last install put first: set set_boot = \"net\" in provisioner `{}`, or make the node boot from the network first in its firmware",
                plan.provisioner.name
            ),
            NetBoot::Nothing => "xCAT has no command to set this node's next boot (see the warning): make it boot from the network first in its firmware".into(),
        }
    }

    /// One look at the node, and what the monitor makes of it.
    fn look(&mut self, x: &Xcat, plan: &Plan, report: &Reporter) -> Poll {
        let seen = match x.look(plan, report, &mut self.logged) {
            Ok(s) => s,
            Err(p) => return p,
        };
        self.known.merge(&seen);
        match self.monitor.observe(&self.known) {
            Verdict::Loaded(s) => Poll::Ready(s),
            Verdict::Going(s) => Poll::NotYet(s),
            v => {
                let s = v.text().to_string();
                self.ended = Some(v);
                Poll::Fatal(anyhow::anyhow!("{s}"))
            }
        }
    }

    /// The outcome of an install that did not end installed, saying what
    /// xCAT saw and what to check.
    fn failure(&self, plan: &Plan, x: &Xcat, o: Outcome) -> Outcome {
        let node = &plan.computer.node;
        let who = who(plan);
        let image = &plan.image.name;
        match (&self.ended, o) {
            (Some(Verdict::Failed(s)), _) => Outcome::Retry(anyhow::anyhow!(
                "{who}: xCAT reports the install of image `{image}` failed ({s}); see /var/log/xcat/computes.log on the management node"
            )),
            (Some(Verdict::Missed(s)), _) => Outcome::Retry(anyhow::anyhow!(
                "{who}: the network boot did not happen: the node started the system on its disk instead of installing image `{image}` (xCAT never saw the install start; {s}); {}; check that DHCP answers it (`makedhcp -q {node}`) and the DHCP/TFTP lines for its MAC in /var/log/messages",
                self.boot_hint(plan, x)
            )),
            (_, Outcome::Retry(e)) => {
                let m = &self.monitor;
                let hint = match (m.install_seen(), m.up_without_install()) {
                    (false, Some(apps)) => format!(
                        "; xCAT never saw the install start while the node answered on {apps}: the network boot probably did not happen (check the boot order and `makedhcp -q {node}`)"
                    ),
                    (false, None) => {
                        "; xCAT never saw the install start: watch the node's console".into()
                    }
                    _ => String::new(),
                };
                Outcome::Retry(anyhow::anyhow!(
                    "{who}: {e}{hint}; watch it with `rcons {node}` and `nodestat {node}`"
                ))
            }
            (_, o) => o,
        }
    }
}
