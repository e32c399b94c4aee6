//! The attempt loop around the two modules, and the single steps scripts
//! chain. It owns the contract: it makes the attempts, turns a retry on the
//! last attempt into fatal for every module and both phases, maps outcomes
//! to exit codes, and keeps the last-run record.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::attempt::Attempt;
use crate::config::Plan;
use crate::os::{OsModule, PowerReset};
pub use crate::outcome::Phase;
use crate::outcome::{EXIT_DONE, EXIT_FATAL, EXIT_STORE, Outcome};
use crate::provision::Provisioner;
use crate::report::{EventResult, Reporter, rfc3339};
use crate::signal;
use crate::state::{LastRun, Preload, RunResult, StateDir};

/// Whether `provision` may skip the load (`--reuse`), with the preload
/// record this run took away when it started.
pub enum Reuse {
    /// Load as usual.
    Off,
    /// Skip the load if the preload still holds.
    Asked(Option<Preload>),
}

/// A provisioner's power reset bound to the plan and the real attempt: the
/// narrow capability the OS module gets.
struct Reset<'a> {
    provisioner: &'a dyn Provisioner,
    plan: &'a Plan,
    attempt: Attempt,
}

impl PowerReset for Reset<'_> {
    fn power_reset(&self, report: &Reporter) -> Option<Outcome> {
        self.provisioner
            .power_reset(self.plan, self.attempt, report)
    }
}

/// The contract's rule for the last attempt: a retry would ask for a reload
/// that will not come, so it is fatal.
fn last_attempt_rule(o: Outcome, attempt: Attempt) -> Outcome {
    match o {
        Outcome::Retry(e) if attempt.is_last() => Outcome::Fatal(e.context(format!(
            "no attempts left to load the image again (attempt {} of {}: attempts spent)",
            attempt.number, attempt.of
        ))),
        other => other,
    }
}

/// What a phase runs as, for the contract's rule of the last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunAs {
    /// Part of an attempt: a retry on the last attempt is fatal.
    Attempt,
    /// The post-load of a reused preload, which is no attempt: its retry
    /// means "load as usual".
    ReusedPreload,
}

/// The most of an error message the last-run record holds, in bytes.
pub const RECORD_MESSAGE_BYTES: usize = 16 * 1024;

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
    /// A write of the record failed once (and was said).
    pub record_failed: bool,
    /// When the run started, the time spent in each phase so far, and
    /// where `[metrics]` wants them.
    pub timing: Timing,
}

/// How long a run took, phase by phase, for `[metrics]`.
#[derive(Debug)]
pub struct Timing {
    started: Instant,
    phases: BTreeMap<&'static str, Duration>,
    /// `[metrics] textfile`, written as the run ends.
    textfile: Option<PathBuf>,
}

impl Timing {
    /// A run starting now, whose numbers go to `textfile` (if any).
    pub fn new(textfile: Option<PathBuf>) -> Timing {
        Timing {
            started: Instant::now(),
            phases: BTreeMap::new(),
            textfile,
        }
    }
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
            pid_start: crate::exec::start_time(std::process::id()),
            boot_id: crate::exec::boot_id(),
            previous: None,
            public_address: None,
        }
    }

    fn save(&mut self) {
        self.record.updated = rfc3339(SystemTime::now());
        if let Err(e) = self
            .state
            .write_last_run(&self.plan.computer.name, &self.record)
            && !self.record_failed
        {
            // Said once: a full disk fails every later write the same way.
            self.record_failed = true;
            let path = self.state.computer_dir(&self.plan.computer.name);
            self.report.warn(&format!(
                "cannot write the last-run record in {}: {e:#}",
                path.display()
            ));
        }
    }

    fn phase(&mut self, phase: Phase, attempt: Attempt) -> Outcome {
        self.phase_as(phase, attempt, RunAs::Attempt)
    }

    /// One phase, run as `run_as` says.
    fn phase_as(&mut self, phase: Phase, attempt: Attempt, run_as: RunAs) -> Outcome {
        self.record.attempt = attempt.number;
        self.record.phase = Some(phase);
        // The record never claims more than is true: while a phase runs,
        // its result is "running", not the previous phase's.
        self.record.result = RunResult::Running;
        self.record.message = None;
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
        let began = Instant::now();
        let o = match phase {
            Phase::Load => self.provisioner.load(self.plan, attempt, self.report),
            Phase::PostLoad => self.os.post_load(
                self.plan,
                attempt,
                &Reset {
                    provisioner: self.provisioner,
                    plan: self.plan,
                    attempt,
                },
                self.state,
                self.report,
            ),
        };
        *self.timing.phases.entry(phase.name()).or_default() += began.elapsed();
        let o = match run_as {
            RunAs::Attempt => last_attempt_rule(o, attempt),
            RunAs::ReusedPreload => o,
        };
        // The record holds a bounded message: its head and tail.
        let msg = o
            .error()
            .map(|e| crate::exec::shorten(&format!("{e:#}"), RECORD_MESSAGE_BYTES));
        // An interrupt wins over what the module made of it, in the event
        // and in the record alike.
        let (event, record) = match signal::caught() {
            Some(_) => (EventResult::Interrupted, RunResult::Interrupted),
            None => (o.verdict().into(), o.verdict().into()),
        };
        self.report.result(phase, event, msg.clone());
        if phase == Phase::PostLoad {
            self.record.public_address = self.report.public_address_seen();
        }
        self.record.result = record;
        self.record.message = msg;
        // Not saved here: whatever comes next saves at once (the next
        // phase as it starts, or `end`), and each save is two fsyncs that
        // would stand between "ready" and the exit the scheduler waits for.
        o
    }

    /// Ends the run: the record, the final event, the exit code. An
    /// interrupt (or a lost coordination store) wins over whatever the
    /// module said.
    fn end(&mut self, code: i32, message: &str) -> i32 {
        let (code, message) = match signal::caught() {
            // The lease was lost at some moment of the run (the keeper or
            // the watchdog raised it), whatever the phase made of it: the
            // record says so first ("lease lost on computer ..."), not
            // the module's view of its killed command, and never done.
            Some(signal::STORE_LOST) => {
                let why = signal::Interrupted(signal::STORE_LOST).to_string();
                self.record.result = RunResult::Interrupted;
                self.record.message = Some(crate::exec::shorten(&why, RECORD_MESSAGE_BYTES));
                (EXIT_STORE, why)
            }
            Some(sig) => {
                self.record.result = RunResult::Interrupted;
                (128 + sig, signal::Interrupted(sig).to_string())
            }
            None => (code, message.to_string()),
        };
        self.record.exit_code = Some(code);
        self.save();
        let result = match self.record.result {
            RunResult::Running | RunResult::Done => EventResult::Done,
            RunResult::Retry => EventResult::Retry,
            RunResult::Fatal => EventResult::Fatal,
            RunResult::Interrupted => EventResult::Interrupted,
        };
        // The run's result is the record's; a provision run whose attempts
        // all asked for retries has a fatal record already.
        let result = if code != 0 && result == EventResult::Done {
            EventResult::Fatal
        } else {
            result
        };
        self.write_metrics(code, result);
        self.report.finish(code, result, &message);
        code
    }

    /// With `[metrics] textfile`: the run's numbers into the textfile
    /// (a failure is a warning: the run's result stands); not for a
    /// power-off.
    fn write_metrics(&self, code: i32, result: EventResult) {
        let Some(textfile) = &self.timing.textfile else {
            return;
        };
        // A power-off (a scheduler's power saving) is no load: it must not
        // hide the night's failed provision behind a "done".
        if self.record.command == "power-off" {
            return;
        }
        let now = SystemTime::now();
        let run = crate::metrics::Computer {
            image: self.plan.image.name.clone(),
            command: self.record.command.clone(),
            result: result.name().to_string(),
            exit_code: code,
            attempts: self.record.attempt,
            max_attempts: self.record.of,
            phases: self
                .timing
                .phases
                .iter()
                .map(|(p, d)| (p.to_string(), d.as_secs_f64()))
                .collect(),
            duration: self.timing.started.elapsed().as_secs_f64(),
            finished: crate::metrics::epoch(now),
            // A computer is ready after a provision or post-load run that
            // ended done; a load alone or a power-off is no success.
            last_success: (code == EXIT_DONE
                && matches!(self.record.command.as_str(), "provision" | "post-load"))
            .then(|| crate::metrics::epoch(now)),
        };
        if let Err(e) = crate::metrics::record(self.state, textfile, &self.plan.computer.name, run)
        {
            self.report.warn(&format!("[metrics]: {e:#}"));
        }
    }

    /// Tells, in the first event and in the record, that the last run on
    /// this computer died while it ran (its record still says "running";
    /// this run holds the lock, so that run is gone).
    pub fn note_previous(&mut self, previous: Option<LastRun>) {
        let Some(p) = previous.filter(|p| p.result == RunResult::Running) else {
            return;
        };
        let phase = p.phase.map_or("before its first phase", |p| p.name());
        let msg = format!(
            "the previous run (pid {}, `{}` of image {}, started {}) ended without finishing, in {phase}: it was killed or crashed; its record said \"running\"",
            p.pid, p.command, p.image, p.started
        );
        self.report.warn(&msg);
        self.record.previous = Some(msg);
    }

    /// `reimage provision`: attempts 1..=n of load then post-load; with
    /// `--reuse`, first the preload, when it still holds.
    pub fn provision(&mut self, n: u32, reuse: Reuse) -> i32 {
        if let Reuse::Asked(preload) = reuse {
            match self.reusable(preload) {
                Ok(why) => {
                    self.report
                        .info(&format!("reuse: skipping the load: {why}"));
                    if let Some(code) = self.post_load_reused(n) {
                        return code;
                    }
                }
                Err(why) => self
                    .report
                    .info(&format!("reuse: refused, loading as usual: {why}")),
            }
        }
        for k in 1..=n {
            let a = self.plan.attempt(k, n);
            self.report.attempt(k, n);
            let loaded = self.phase(Phase::Load, a);
            if signal::caught().is_some() {
                return self.end(EXIT_FATAL, "");
            }
            match loaded {
                Outcome::Done => {}
                Outcome::Retry(_) => continue,
                Outcome::Fatal(e) => return self.fatal(Phase::Load, &e),
            }
            let ready = self.phase(Phase::PostLoad, a);
            if signal::caught().is_some() {
                return self.end(EXIT_FATAL, "");
            }
            match ready {
                Outcome::Done => {
                    if self.plan.reservation.is_none() {
                        self.record_preload();
                    }
                    return self.end(
                        EXIT_DONE,
                        &format!(
                            "{} is ready with image {}",
                            self.plan.computer.name, self.plan.image.name
                        ),
                    );
                }
                Outcome::Retry(_) => continue,
                Outcome::Fatal(e) => return self.fatal(Phase::PostLoad, &e),
            }
        }
        // Not reached: the last attempt's retry became fatal in `phase`.
        self.end(EXIT_FATAL, "attempts spent")
    }

    /// Whether the preload this run took may stand in for a load: Ok(why),
    /// or Err(why not).
    fn reusable(&self, preload: Option<Preload>) -> Result<String, String> {
        let plan = self.plan;
        let Some(p) = preload else {
            return Err(format!(
                "no preload record: reimage has not loaded {} for no reservation, or a run (a reservation) has had it since",
                plan.computer.name
            ));
        };
        if p.image != plan.image.name {
            return Err(format!(
                "the preload is image `{}`, not `{}`",
                p.image, plan.image.name
            ));
        }
        self.report
            .progress("checking the preload: boot id and image check");
        let now = self
            .os
            .identify(plan, true)
            .map_err(|e| format!("it does not answer as preloaded: {e}"))?;
        if now != p.boot_id {
            return Err(format!(
                "its boot id changed since the preload ({} then, {now} now): it rebooted or was loaded again",
                p.boot_id
            ));
        }
        Ok(format!(
            "{} still runs the preload of `{}` verified {} (boot id {now} unchanged, image check passed)",
            plan.computer.name, p.image, p.verified
        ))
    }

    /// Post-load on a reused preload: no load, and not an attempt of its
    /// own. Some(exit code) when that settles the run; None: load as usual.
    fn post_load_reused(&mut self, n: u32) -> Option<i32> {
        // No load happened: post-load must not wait for a new boot id.
        if let Err(e) = self.state.write_boot_id(&self.plan.computer.name, None) {
            self.report
                .warn(&format!("cannot clear the recorded boot id: {e:#}"));
        }
        let a = self.plan.attempt(1, n);
        self.report.attempt(1, n);
        let o = self.phase_as(Phase::PostLoad, a, RunAs::ReusedPreload);
        if signal::caught().is_some() {
            return Some(self.end(EXIT_FATAL, ""));
        }
        match o {
            Outcome::Done => Some(self.end(
                EXIT_DONE,
                &format!(
                    "{} is ready with image {} (preload reused, no load)",
                    self.plan.computer.name, self.plan.image.name
                ),
            )),
            Outcome::Retry(e) => {
                self.report.info(&format!(
                    "reuse: the preloaded computer did not get ready ({e:#}): loading as usual"
                ));
                None
            }
            Outcome::Fatal(e) => Some(self.fatal(Phase::PostLoad, &e)),
        }
    }

    /// After a provision for no reservation: records the preload, with the
    /// boot id the computer answers with now.
    fn record_preload(&self) {
        let name = &self.plan.computer.name;
        match self.os.identify(self.plan, false) {
            Ok(boot_id) => {
                let p = Preload {
                    image: self.plan.image.name.clone(),
                    boot_id: boot_id.clone(),
                    verified: rfc3339(SystemTime::now()),
                    pid: std::process::id(),
                };
                match self.state.write_preload(name, &p) {
                    Ok(()) => self.report.info(&format!(
                        "preload recorded (boot id {boot_id}): `provision --reuse` for the next reservation may skip the load"
                    )),
                    Err(e) => self
                        .report
                        .warn(&format!("cannot record the preload: {e:#}")),
                }
            }
            Err(e) => self.report.info(&format!(
                "no preload recorded ({e}): `--reuse` will load as usual"
            )),
        }
    }

    /// Ends a provision run on a fatal outcome.
    fn fatal(&mut self, phase: Phase, e: &anyhow::Error) -> i32 {
        self.end(
            EXIT_FATAL,
            &format!("{} failed, not retrying: {e:#}", phase.name()),
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

    /// `reimage power-off`: the provisioner's own power-off, once; exit 0
    /// / 75 / 1 as for a single step. No phase, no attempt loop: the record
    /// says `power-off` with attempt 1 of 1.
    pub fn power_off(&mut self) -> i32 {
        let name = &self.plan.computer.name;
        let Some(off) = self.provisioner.power_off() else {
            // `main` refuses before the lock; kept as a fatal for safety.
            return self.end(
                EXIT_FATAL,
                &format!(
                    "provisioner `{}` has no power-off",
                    self.plan.provisioner.name
                ),
            );
        };
        self.record.attempt = 1;
        self.save();
        let o = off.off(self.plan, self.report);
        let msg = match &o {
            Outcome::Done => format!("{name} is off"),
            Outcome::Retry(e) => format!("power-off asks for a retry: {e:#}"),
            Outcome::Fatal(e) => format!("power-off failed: {e:#}"),
        };
        self.record.result = o.verdict().into();
        self.record.message = o
            .error()
            .map(|e| crate::exec::shorten(&format!("{e:#}"), RECORD_MESSAGE_BYTES));
        self.end(o.exit_code(), &msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Verdict;

    #[test]
    fn retry_on_the_last_attempt_becomes_fatal() {
        let o = last_attempt_rule(
            Outcome::Retry(anyhow::anyhow!("timed out")),
            Attempt::new(3, 3, 1.0),
        );
        assert_eq!(o.verdict(), Verdict::Fatal);
        let msg = format!("{:#}", o.error().expect("an error"));
        assert!(
            msg.contains("no attempts left") && msg.contains("timed out"),
            "{msg}"
        );
        let o = last_attempt_rule(
            Outcome::Retry(anyhow::anyhow!("timed out")),
            Attempt::new(2, 3, 1.0),
        );
        assert_eq!(o.verdict(), Verdict::Retry);
        let o = last_attempt_rule(Outcome::Done, Attempt::new(3, 3, 1.0));
        assert_eq!(o.verdict(), Verdict::Done);
    }
}
