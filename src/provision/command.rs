//! `command`: any external command whose exit code follows the contract
//! (0 loaded, 75 retry, anything else fatal). This is how MAAS, Ironic,
//! Foreman or a site script plug in.

use serde::Deserialize;
use std::time::Duration;

use super::{PowerOff, Provisioner, expand, placeholders};
use crate::attempt::Attempt;
use crate::config::{FileUse, LocalFile, Plan};
use crate::duration;
use crate::exec::{Cmd, Hints};
use crate::outcome::Outcome;
use crate::report::Reporter;

/// `[provisioners.NAME] kind = "command"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The load command as an argument vector, with placeholders.
    pub load: Vec<String>,
    /// Killed (whole process group) after this long; the result is retry.
    #[serde(default = "default_timeout", deserialize_with = "duration::de")]
    pub timeout: Duration,
    /// Optional power-reset command, for OS profiles that reset on a failed
    /// wait.
    pub power_reset: Option<Vec<String>>,
    /// Timeout of the power-reset command.
    #[serde(default = "default_reset_timeout", deserialize_with = "duration::de")]
    pub power_reset_timeout: Duration,
    /// Optional power-off command, for `reimage power-off` (a scheduler's
    /// power saving); without it the computer cannot be powered off.
    pub power_off: Option<Vec<String>>,
    /// Timeout of the power-off command.
    #[serde(default = "default_reset_timeout", deserialize_with = "duration::de")]
    pub power_off_timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_reset_timeout() -> Duration {
    Duration::from_secs(120)
}

impl CommandConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        if self.load.is_empty() || self.load[0].trim().is_empty() {
            return Err("`load` must be a non-empty argument vector, e.g. [\"/usr/local/bin/reload\", \"{node}\"]".into());
        }
        if self.timeout.is_zero() {
            return Err("`timeout` of 0s would kill the load command at once: give a duration longer than 0s, e.g. \"30m\"".into());
        }
        if self.power_reset_timeout.is_zero() {
            return Err("`power_reset_timeout` must be longer than 0s".into());
        }
        if matches!(&self.power_reset, Some(v) if v.is_empty()) {
            return Err("`power_reset` must be a non-empty argument vector".into());
        }
        if self.power_off_timeout.is_zero() {
            return Err("`power_off_timeout` must be longer than 0s".into());
        }
        if matches!(&self.power_off, Some(v) if v.is_empty()) {
            return Err("`power_off` must be a non-empty argument vector, e.g. [\"/usr/local/bin/power\", \"off\", \"{node}\"]".into());
        }
        super::check_argv_placeholders("load", &self.load, &[])?;
        for (key, argv) in [
            ("power_reset", &self.power_reset),
            ("power_off", &self.power_off),
        ] {
            if let Some(v) = argv {
                super::check_argv_placeholders(key, v, &[])?;
            }
        }
        Ok(())
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        let a = plan.attempt(1, plan.max_attempts);
        let argv: Vec<String> = self
            .load
            .iter()
            .map(|s| expand(s, &placeholders(plan, a)))
            .collect();
        vec![
            format!("load command: {}", argv.join(" ")),
            format!("load timeout: {}", plan.per_attempt(self.timeout)),
            format!(
                "power reset: {}",
                self.power_reset
                    .as_ref()
                    .map(|v| v.join(" "))
                    .unwrap_or_else(|| "not configured".into())
            ),
            format!(
                "power off: {}",
                self.power_off
                    .as_ref()
                    .map(|v| v.join(" "))
                    .unwrap_or_else(|| "not configured (`reimage power-off` refuses)".into())
            ),
        ]
    }
}

/// `argv` with its placeholders expanded. A word that a placeholder makes
/// start with '-' (the word itself did not) is refused: a value (a
/// reservation id, an image name) never becomes an option of the command.
fn expand_argv(argv: &[String], values: &[(&'static str, String)]) -> anyhow::Result<Vec<String>> {
    argv.iter()
        .map(|word| {
            let w = expand(word, values);
            if w.starts_with('-') && !word.starts_with('-') {
                anyhow::bail!(
                    "`{word}` becomes `{w}`, which the command would take as an option: a placeholder's value may not start with '-'"
                );
            }
            Ok(w)
        })
        .collect()
}

/// The command provisioner.
pub struct CommandProvisioner {
    config: CommandConfig,
}

impl CommandProvisioner {
    /// A command provisioner.
    pub fn new(config: CommandConfig) -> CommandProvisioner {
        CommandProvisioner { config }
    }

    fn run(
        &self,
        argv: &[String],
        timeout: Duration,
        plan: &Plan,
        attempt: Attempt,
        report: &Reporter,
        what: &str,
    ) -> Outcome {
        let values = placeholders(plan, attempt);
        let argv = match expand_argv(argv, &values) {
            Ok(a) => a,
            Err(e) => {
                return Outcome::Fatal(e.context(format!("{what} of {}", plan.computer.name)));
            }
        };
        let mut cmd = Cmd::new(&argv, timeout);
        for (k, v) in &values {
            cmd = cmd.env(format!("REIMAGE_{}", k.to_uppercase()), v.clone());
        }
        // A step of its own (unless it runs inside one, as a power reset
        // in a wait step): the terminal shows its elapsed time and the
        // time left before the timeout kills the command.
        let own = !report.in_step();
        if own {
            report.step(what, Some(timeout));
            report.info(&format!("{what}: running `{}`", cmd.display()));
        } else {
            report.info(&format!(
                "{what}: running `{}` (timeout {})",
                cmd.display(),
                duration::fmt(timeout)
            ));
        }
        let outcome = self.outcome(cmd, plan, what, report);
        match &outcome {
            _ if !own => {}
            Outcome::Done => report.step_done("exit 0"),
            Outcome::Retry(e) | Outcome::Fatal(e) => report.step_failed(&format!("{e:#}")),
        }
        outcome
    }

    /// Runs the command and reads its exit: 0 done, 75 retry, else fatal.
    fn outcome(&self, cmd: Cmd, plan: &Plan, what: &str, report: &Reporter) -> Outcome {
        let shown = cmd.display();
        match cmd.run() {
            Ok(out) => {
                report.output(&shown, &out);
                let err = || {
                    anyhow::anyhow!(
                        "`{shown}` exited {}: {}",
                        out.status,
                        crate::exec::excerpt(&out.text(), 5)
                    )
                };
                match out.status {
                    0 => Outcome::Done,
                    75 => Outcome::Retry(err().context(format!(
                        "{what} of {} asked for a retry",
                        plan.computer.name
                    ))),
                    _ => Outcome::Fatal(
                        err().context(format!("{what} of {} failed", plan.computer.name)),
                    ),
                }
            }
            Err(e) => {
                if let Some(p) = e.partial() {
                    report.output(&shown, p);
                }
                e.into_outcome(
                    &format!("{what} of {}", plan.computer.name),
                    &shown,
                    Hints {
                        spawn: "check the command's path in the provisioner",
                        timeout: "",
                    },
                )
            }
        }
    }
}

impl Provisioner for CommandProvisioner {
    /// Each command given by its path (`/usr/local/bin/reload`, not one
    /// found on PATH) must be there and executable.
    fn local_files(&self, plan: &Plan) -> Vec<LocalFile> {
        let c = &self.config;
        [
            ("load", Some(&c.load)),
            ("power_reset", c.power_reset.as_ref()),
            ("power_off", c.power_off.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, argv)| Some((key, argv?.first()?)))
        .filter(|(_, prog)| prog.contains('/'))
        .map(|(key, prog)| {
            LocalFile::new(
                std::path::Path::new(prog),
                &["provisioners", &plan.provisioner.name, key],
                FileUse::Run,
            )
        })
        .collect()
    }

    fn describe(&self, plan: &Plan) -> Vec<String> {
        self.config.describe(plan)
    }

    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome {
        self.run(
            &self.config.load,
            attempt.scale(self.config.timeout),
            plan,
            attempt,
            report,
            "load",
        )
    }

    fn power_reset(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Option<Outcome> {
        let argv = self.config.power_reset.as_ref()?;
        Some(self.run(
            argv,
            self.config.power_reset_timeout,
            plan,
            attempt,
            report,
            "power reset",
        ))
    }

    fn power_off(&self) -> Option<&dyn PowerOff> {
        self.config
            .power_off
            .as_ref()
            .map(|_| self as &dyn PowerOff)
    }
}

/// `reimage power-off`: the `power_off` command, with the placeholders of
/// attempt 1 of 1; exit 0 off, 75 retry, anything else fatal.
impl PowerOff for CommandProvisioner {
    fn off(&self, plan: &Plan, report: &Reporter) -> Outcome {
        let Some(argv) = &self.config.power_off else {
            return Outcome::Fatal(anyhow::anyhow!(
                "provisioner `{}` names no power_off command",
                plan.provisioner.name
            ));
        };
        self.run(
            argv,
            self.config.power_off_timeout,
            plan,
            plan.attempt(1, 1),
            report,
            "power off",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_never_makes_an_option() {
        let v = vec![
            ("reservation", "-x".to_string()),
            ("node", "pc7".to_string()),
        ];
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(expand_argv(&argv(&["load", "{reservation}"]), &v).is_err());
        assert_eq!(
            expand_argv(
                &argv(&["load", "--node", "{node}", "--id={reservation}"]),
                &v
            )
            .expect("options the config wrote stay"),
            argv(&["load", "--node", "pc7", "--id=-x"])
        );
    }
}
