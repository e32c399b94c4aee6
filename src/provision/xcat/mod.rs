//! `xcat`: bare metal through the xCAT 2.x command line on the management
//! node, the way Apache VCL's xCAT.pm and xCAT's own `rinstall` do it:
//! point the node's network boot at the osimage (`nodeset NODE
//! osimage=IMAGE`; or, for an image named by nodetype attributes, `chdef`
//! them and `nodeset NODE install`), set its next boot to the network
//! (`rsetboot NODE net`, or `rnetboot NODE` on POWER), power it on or
//! reset it (`rpower NODE boot`), then watch the install through
//! `nodestat`, `lsdef -i status` and `nodeset NODE stat` until xCAT shows
//! that the install ran and ended.
//!
//! A load is four steps, each in its file: `slot` (a load slot on the
//! management node), nodeset (here, with chdef first for a nodetype image:
//! `target`), `power`, `install`. What xCAT's answers mean, and where that
//! comes from, is in `answers`; when a load is done, in `monitor`.

mod answers;
mod config;
mod install;
mod monitor;
mod online;
mod power;
mod slot;
mod target;

use std::time::Duration;

use super::{PowerOff, Provisioner};
use crate::attempt::Attempt;
use crate::config::{KeyError, Plan};
use crate::exec::{Cmd, Hints, Output};
use crate::outcome::{Outcome, collapse};
use crate::report::Reporter;
use answers::{Destiny, ImageKind, NetBoot, XcatError};
pub use answers::{find_error, node_value};
/// The readers the property tests feed random text.
#[cfg(test)]
pub use answers::{lsdef_status, parse_power, status_word};
pub use config::XcatConfig;
use target::Target;

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

    fn load_steps(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Result<(), Outcome> {
        let node = plan.computer.node.as_str();
        let target = Target::parse(&plan.image.source).map_err(|e| {
            Outcome::Fatal(anyhow::anyhow!(
                "{}: image `{}`: {e}",
                who(plan),
                plan.image.name
            ))
        })?;
        report.info(&format!(
            "loading {} onto xCAT node `{node}` through {}",
            target.words(),
            self.config.root().display()
        ));

        // 1. A load slot on this management node.
        let slot = self.take_slot(plan, report)?;

        // 2. Network boot into the image: its nodetype attributes first,
        // when it is named by them.
        if let Target::Nodetype(n) = &target {
            report.step("chdef", None);
            let mut args = vec!["-t", "node", "-o", node];
            let attrs = n.chdef_args();
            args.extend(attrs.iter().map(String::as_str));
            if let Err(o) = self.must(plan, report, "chdef", &args) {
                report.step_failed("nodetype attributes not set");
                return Err(o);
            }
            report.step_done(&attrs.join(" "));
        }
        report.step("nodeset", None);
        let arg = target.nodeset_arg();
        let out = self.must(plan, report, "nodeset", &[node, &arg])?;
        let state = node_value(&out.stdout, node).unwrap_or_else(|| Destiny::Install.name().into());
        let kind = ImageKind::of_state(&state);
        report.step_done(&format!(
            "{state} ({})",
            match kind {
                ImageKind::Diskful => "installs to disk",
                ImageKind::Diskless => "diskless",
            }
        ));

        // 3. The next boot to the network, then power on when off, reset
        // when on.
        report.step("power", None);
        let started = self
            .net_boot(plan, report)
            .and_then(|way| self.power_boot(plan, report, way));
        let way = match started {
            Ok((did, way)) => {
                report.step_done(&did);
                way
            }
            Err(o) => {
                report.step_failed("power did not come on");
                return Err(o);
            }
        };

        // 4. Watch the install; the slot is held until it is done.
        let r = self.monitor(plan, attempt, report, kind, way);
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
        XcatError::Refused(_) => Outcome::Fatal(anyhow::anyhow!(
            "{who}: this xCAT does not load images by nodetype attributes (xCAT 2.13.8 and later take osimages only): `{shown}` said: {said}; set the source of image `{}` to an osimage name (`lsdef -t osimage -w osvers==OS -w osarch==ARCH -w profile==PROFILE` lists those that match)",
            plan.image.name
        )),
        XcatError::Other(_) => Outcome::Retry(anyhow::anyhow!(
            "{who}: `{shown}` failed (exit {}): {said}",
            out.status
        )),
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

    fn slot_class(&self, name: &str) -> Option<crate::coord::SlotClass> {
        Some(self.slot_class_now(name))
    }

    fn online(&self, plan: &Plan) -> Vec<super::Checked> {
        self.online_checks(plan)
    }

    /// The image's source must name an osimage or nodetype attributes.
    fn vet(&self, plan: &Plan) -> Result<(), KeyError> {
        Target::parse(&plan.image.source)
            .map(|_| ())
            .map_err(|e| KeyError {
                path: vec!["images".into(), plan.image.name.clone(), "source".into()],
                message: format!("image `{}`: {e}", plan.image.name),
            })
    }

    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome {
        if let Err(e) = self.vet(plan) {
            return super::refused(plan, e);
        }
        collapse(self.load_steps(plan, attempt, report))
    }

    /// `rpower NODE boot`, which powers on a node that is off and resets
    /// one that is on, checked with `rpower NODE stat`.
    fn power_reset(&self, plan: &Plan, _attempt: Attempt, report: &Reporter) -> Option<Outcome> {
        report.step("power reset", None);
        Some(match self.power_boot(plan, report, NetBoot::Nothing) {
            Ok((did, _)) => {
                report.step_done(&did);
                Outcome::Done
            }
            Err(o) => {
                report.step_failed("power did not come on");
                o
            }
        })
    }

    fn power_off(&self) -> Option<&dyn PowerOff> {
        Some(self)
    }
}
