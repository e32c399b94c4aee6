//! First-boot actions: named, idempotent commands run over the channel,
//! each reported as a step and classified on failure.

use std::time::Duration;

use crate::config::Plan;
use crate::control::Channel;
use crate::exec::Output;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// Runs actions for one computer.
pub struct Actions<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The channel.
    pub ch: &'a mut dyn Channel,
    /// Where events go.
    pub report: &'a Reporter,
    /// Timeout of one action (grown for the attempt).
    pub timeout: Duration,
    /// The attempt (hooks and scripts see its number).
    pub attempt: crate::attempt::Attempt,
}

impl<'a> Actions<'a> {
    /// Actions for `plan` at `attempt`: each command's timeout is the
    /// profile's `command_timeout` grown for the attempt.
    pub fn new(
        plan: &'a Plan,
        attempt: crate::attempt::Attempt,
        ch: &'a mut dyn Channel,
        report: &'a Reporter,
    ) -> Actions<'a> {
        let timeout = attempt.scale(plan.profile.command_timeout);
        Actions {
            plan,
            ch,
            report,
            timeout,
            attempt,
        }
    }

    fn output(&self, argv: &[String], out: &Output) {
        self.report.output(&argv.join(" "), out);
    }

    /// Runs `argv` as action `name`; a non-zero exit fails with `on_fail`
    /// (Retry or Fatal, chosen by the caller for what reloading can fix).
    pub fn run(
        &mut self,
        name: &str,
        argv: &[String],
        on_fail: fn(anyhow::Error) -> Outcome,
    ) -> Result<Output, Outcome> {
        self.run_classified(name, argv, move |_| on_fail)
    }

    /// Runs `argv` as action `name`; a non-zero exit fails as `classify`
    /// says for that exit code.
    pub fn run_classified(
        &mut self,
        name: &str,
        argv: &[String],
        classify: impl Fn(i32) -> fn(anyhow::Error) -> Outcome,
    ) -> Result<Output, Outcome> {
        self.report.step(name, Some(self.timeout));
        let who = &self.plan.computer.name;
        let out = match self.ch.run(argv, self.timeout) {
            Ok(o) => o,
            Err(e) => {
                self.report.step_failed(&e.to_string());
                return Err(e.into_outcome(format!("{who}: first-boot action `{name}`")));
            }
        };
        self.output(argv, &out);
        if out.status != 0 {
            let text = format!("{}{}", out.stdout.trim(), out.stderr.trim());
            let m = format!(
                "{who}: first-boot action `{name}` exited {}: {}",
                out.status,
                text.trim()
            );
            self.report.step_failed(&m);
            return Err(classify(out.status)(anyhow::anyhow!(m)));
        }
        let last = out
            .stdout
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("done");
        self.report.step_done(last.trim());
        Ok(out)
    }

    /// Runs `argv` as step `name` and hands back its output whatever its
    /// exit: the caller reads what it means and ends the step. A channel
    /// error ends the step and becomes an outcome.
    pub fn ask(&mut self, name: &str, argv: &[String]) -> Result<Output, Outcome> {
        self.report.step(name, Some(self.timeout));
        let who = &self.plan.computer.name;
        match self.ch.run(argv, self.timeout) {
            Ok(out) => {
                self.output(argv, &out);
                Ok(out)
            }
            Err(e) => {
                self.report.step_failed(&e.to_string());
                Err(e.into_outcome(format!("{who}: first-boot action `{name}`")))
            }
        }
    }

    /// Writes `data` to `path` on the computer as action `name`.
    pub fn upload(
        &mut self,
        name: &str,
        data: &[u8],
        path: &str,
        mode: i32,
    ) -> Result<(), Outcome> {
        self.report.step(name, Some(self.timeout));
        let who = &self.plan.computer.name;
        match self.ch.upload(data, path, mode, self.timeout) {
            Ok(()) => {
                self.report.step_done(&format!("wrote {path}"));
                Ok(())
            }
            Err(e) => {
                self.report.step_failed(&e.to_string());
                Err(e.into_outcome(format!("{who}: first-boot action `{name}` writing {path}")))
            }
        }
    }

    /// Runs the image's `post_load` scripts of the management node: each
    /// local file is uploaded to `dir` and run with `runner` (its remote
    /// path and the hooks' environment, [`super::hooks::env`]). A missing
    /// local script is fatal; a script exiting 75 asks for a retry, any
    /// other failure is fatal (the contract's codes, as for load
    /// commands).
    pub fn scripts(
        &mut self,
        dir: &str,
        sep: char,
        runner: fn(&str, &super::hooks::Env) -> Result<Vec<String>, String>,
    ) -> Result<(), Outcome> {
        let env = super::hooks::env(self);
        for path in self.plan.image.config.post_load.clone() {
            let who = self.plan.computer.name.clone();
            let data = std::fs::read(&path).map_err(|e| {
                Outcome::Fatal(anyhow::anyhow!(
                    "{who}: post-load script {} of image `{}` cannot be read: {e}",
                    path.display(),
                    self.plan.image.name
                ))
            })?;
            let base = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("script");
            let remote = format!("{dir}{sep}{base}");
            self.upload(&format!("upload {base}"), &data, &remote, 0o700)?;
            let argv = runner(&remote, &env).map_err(|why| {
                Outcome::Fatal(anyhow::anyhow!("{who}: post-load script {base}: {why}"))
            })?;
            let name = format!("script {base}");
            self.script_step(&name, &argv)?;
        }
        Ok(())
    }
}
