//! The attempt loop around the two modules, and the single steps scripts
//! chain. It maps outcomes to exit codes and keeps the last-run record.

use std::time::SystemTime;

use crate::attempt::Attempt;
use crate::config::Plan;
use crate::os::OsModule;
pub use crate::outcome::Phase;
use crate::outcome::{EXIT_DONE, EXIT_FATAL, Outcome};
use crate::provision::Provisioner;
use crate::report::{Reporter, rfc3339};
use crate::signal;
use crate::state::{LastRun, RunResult, StateDir};

/// What the runner works with.
pub struct Runner<'a> {
    /// The resolved plan.
    pub plan: &'a Plan,
    /// The provisioning module.
    pub provisioner: &'a dyn Provisioner,
    /// The OS module.
    pub os: &'a dyn OsModule,
    /// The state directory.
    pub state: &'a StateDir,
    /// Where events go.
    pub report: &'a Reporter,
    /// The last-run record, updated as the run goes.
    pub record: LastRun,
}

impl Runner<'_> {
    /// A fresh record for `command`.
    pub fn record_for(plan: &Plan, command: &str, of: u32) -> LastRun {
        let now = rfc3339(SystemTime::now());
        LastRun {
            command: command.into(),
            image: plan.image.name.clone(),
            reservation: plan.reservation.clone(),
            attempt: 0,
            of,
            phase: None,
            result: RunResult::Running,
            message: None,
            exit_code: None,
            started: now.clone(),
            updated: now,
            pid: std::process::id(),
        }
    }

    fn save(&mut self) {
        self.record.updated = rfc3339(SystemTime::now());
        if let Err(e) = self
            .state
            .write_last_run(&self.plan.computer.name, &self.record)
        {
            self.report
                .warn(&format!("cannot write the last-run record: {e:#}"));
        }
    }

    fn phase(&mut self, phase: Phase, attempt: Attempt) -> Outcome {
        self.record.attempt = attempt.number;
        self.record.phase = Some(phase);
        self.save();
        if phase == Phase::Load {
            if self.provisioner.reloads() {
                self.os.before_load(self.plan, self.state, self.report);
            } else if let Err(e) = self.state.write_boot_id(&self.plan.computer.name, None) {
                self.report
                    .warn(&format!("cannot clear the recorded boot id: {e:#}"));
            }
        }
        self.report.phase(phase);
        let o = match phase {
            Phase::Load => self.provisioner.load(self.plan, attempt, self.report),
            Phase::PostLoad => self.os.post_load(
                self.plan,
                attempt,
                self.provisioner,
                self.state,
                self.report,
            ),
        };
        let msg = o.error().map(|e| format!("{e:#}"));
        self.report.result(phase, o.verdict(), msg.clone());
        self.record.result = o.verdict().into();
        self.record.message = msg;
        self.save();
        o
    }

    /// Ends the run: the record, the final event, the exit code. An
    /// interrupt wins over whatever the module said.
    fn end(&mut self, code: i32, message: &str) -> i32 {
        let (code, message) = match signal::caught() {
            Some(sig) => {
                self.record.result = RunResult::Interrupted;
                (128 + sig, signal::Interrupted(sig).to_string())
            }
            None => (code, message.to_string()),
        };
        self.record.exit_code = Some(code);
        self.save();
        self.report.finish(code, &message);
        code
    }

    /// `reimage provision`: attempts 1..=n of load then post-load.
    pub fn provision(&mut self, n: u32) -> i32 {
        for k in 1..=n {
            let a = Attempt::new(k, n, self.plan.growth);
            self.report.attempt(k, n);
            let loaded = self.phase(Phase::Load, a);
            if signal::caught().is_some() {
                return self.end(EXIT_FATAL, "");
            }
            match loaded {
                Outcome::Done => {}
                Outcome::Retry(_) => continue,
                Outcome::Fatal(e) => {
                    return self.end(EXIT_FATAL, &format!("load failed, not retrying: {e:#}"));
                }
            }
            let ready = self.phase(Phase::PostLoad, a);
            if signal::caught().is_some() {
                return self.end(EXIT_FATAL, "");
            }
            match ready {
                Outcome::Done => {
                    return self.end(
                        EXIT_DONE,
                        &format!(
                            "{} is ready with image {}",
                            self.plan.computer.name, self.plan.image.name
                        ),
                    );
                }
                Outcome::Retry(_) => continue,
                Outcome::Fatal(e) => {
                    return self.end(
                        EXIT_FATAL,
                        &format!("post-load failed, not retrying: {e:#}"),
                    );
                }
            }
        }
        self.record.result = RunResult::Fatal;
        self.end(
            EXIT_FATAL,
            &format!("all {n} attempts asked for a retry: attempts spent"),
        )
    }

    /// `reimage load` / `reimage post-load`: one step, exit 0 / 75 / 1.
    pub fn single(&mut self, phase: Phase, attempt: Attempt) -> i32 {
        self.report.attempt(attempt.number, attempt.of);
        let o = self.phase(phase, attempt);
        let msg = match &o {
            Outcome::Done => format!("{} done", phase.name()),
            Outcome::Retry(e) => format!("{} asks for a retry: {e:#}", phase.name()),
            Outcome::Fatal(e) => format!("{} failed: {e:#}", phase.name()),
        };
        self.end(o.exit_code(), &msg)
    }
}
