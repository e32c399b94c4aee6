//! Post-load hooks: the image's own scripts (Apache VCL's `vcl_post_load`
//! at VCL's paths, then reimage's `post-load.d` folder, in name order) and
//! the management node's `post_load` scripts after them, all with the same
//! environment: REIMAGE_COMPUTER, REIMAGE_IMAGE, REIMAGE_RESERVATION and
//! REIMAGE_ATTEMPT. A family says where its hooks live and how one runs
//! ([`HookShell`]); this file finds them, orders them and judges them.
//!
//! VCL runs `vcl_post_load` and goes on whatever it returns (a warning
//! here); a `post-load.d` hook answers as a `post_load` script does (75:
//! a retry; another failure: fatal). `image_hooks = false` on the image
//! turns the image's own hooks off.

use std::time::Duration;

use super::actions::Actions;
use crate::outcome::Outcome;

/// The environment a hook or post-load script runs with.
pub type Env = Vec<(&'static str, String)>;

/// How a family finds and runs hooks.
pub struct HookShell {
    /// The command that lists VCL's script(s) that exist, one path a line,
    /// in the order they run.
    pub vcl: Vec<String>,
    /// The command that lists the hooks of `post-load.d` on stdout, one a
    /// line (any order: they are sorted here), each path `dir_prefix` +
    /// the line; nothing when there is no folder.
    pub dir: Vec<String>,
    /// What each line of `dir` is prefixed with.
    pub dir_prefix: &'static str,
    /// The command that runs the hook at `path` with `env`; Err: why it
    /// cannot.
    pub run: fn(&str, &Env) -> Result<Vec<String>, String>,
}

/// The environment of the hooks and scripts of `a`'s run.
pub fn env(a: &Actions) -> Env {
    vec![
        ("REIMAGE_COMPUTER", a.plan.computer.name.clone()),
        ("REIMAGE_IMAGE", a.plan.image.name.clone()),
        (
            "REIMAGE_RESERVATION",
            a.plan.reservation.clone().unwrap_or_default(),
        ),
        ("REIMAGE_ATTEMPT", a.attempt.number.to_string()),
    ]
}

/// One hook found on the computer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// VCL's `vcl_post_load` (warns on failure) or one of `post-load.d`.
    pub vcl: bool,
    /// Its path on the computer.
    pub path: String,
}

/// The non-empty lines of a list command's output.
fn lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The hooks in the order they run: VCL's in the order listed (VCL's
/// own), then those of `post-load.d` by name (bytes).
pub fn order(vcl: &str, dir: &str, prefix: &str) -> Vec<Hook> {
    let mut d: Vec<String> = lines(dir);
    d.sort();
    d.dedup();
    let mut v: Vec<Hook> = lines(vcl)
        .into_iter()
        .map(|path| Hook { vcl: true, path })
        .collect();
    v.extend(d.into_iter().map(|l| Hook {
        vcl: false,
        path: format!("{prefix}{l}"),
    }));
    v
}

/// The base name of `path` (either separator).
fn base(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

impl Actions<'_> {
    /// Runs the image's own hooks through `shell` (unless the image says
    /// `image_hooks = false`), each as its own step.
    pub fn hooks(&mut self, shell: &HookShell) -> Result<(), Outcome> {
        if self.plan.image.config.image_hooks == Some(false) {
            return Ok(());
        }
        let mut found = Vec::new();
        for cmd in [&shell.vcl, &shell.dir] {
            let out = self.ch.run(cmd, self.timeout).map_err(|e| {
                e.into_outcome(format!(
                    "{}: finding the image's hooks",
                    self.plan.computer.name
                ))
            })?;
            self.report.output(&cmd.join(" "), &out);
            // What exists is on stdout, whatever the exit: `dir` with
            // several patterns may exit 1 for one that matched nothing.
            found.push(out.stdout);
        }
        let hooks = order(&found[0], &found[1], shell.dir_prefix);
        let names: Vec<&str> = hooks.iter().map(|h| h.path.as_str()).collect();
        self.report.info(&if names.is_empty() {
            "image hooks: the image has none".to_string()
        } else {
            format!("image hooks, in order: {}", names.join(", "))
        });
        let env = env(self);
        for h in hooks {
            let argv = (shell.run)(&h.path, &env).map_err(|why| {
                Outcome::Fatal(anyhow::anyhow!(
                    "{}: image hook {}: {why}",
                    self.plan.computer.name,
                    h.path
                ))
            })?;
            let name = format!("hook {}", base(&h.path));
            match self.script_step(&name, &argv) {
                Err(Outcome::Fatal(e) | Outcome::Retry(e)) if h.vcl => self.report.warn(&format!(
                    "{e:#} (VCL's post-load script: going on, as VCL does)"
                )),
                r => r?,
            }
        }
        Ok(())
    }

    /// The timeout of one post-load script or hook.
    pub fn script_timeout(&self) -> Duration {
        self.plan
            .image
            .config
            .post_load_timeout
            .unwrap_or(Duration::from_secs(600))
    }

    /// Runs one script or hook `argv` as step `name`: exit 0 is done, 75 a
    /// retry, another exit fatal (the contract's codes, as for load
    /// commands).
    pub fn script_step(&mut self, name: &str, argv: &[String]) -> Result<(), Outcome> {
        let timeout = self.script_timeout();
        let who = self.plan.computer.name.clone();
        self.report.step(name, Some(timeout));
        let out = self.ch.run(argv, timeout).map_err(|e| {
            self.report.step_failed(&e.to_string());
            e.into_outcome(format!("{who}: {name}"))
        })?;
        self.report.output(&argv.join(" "), &out);
        if out.status == 0 {
            self.report.step_done("exit 0");
            return Ok(());
        }
        let text = format!("{}{}", out.stdout.trim(), out.stderr.trim());
        let m = format!(
            "{who}: {name} exited {}: {}",
            out.status,
            crate::exec::excerpt(text.trim(), 5)
        );
        self.report.step_failed(&m);
        let e = anyhow::anyhow!(m);
        Err(if out.status == 75 {
            Outcome::Retry(e)
        } else {
            Outcome::Fatal(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_run_vcl_first_then_by_name() {
        let hooks = order(
            "/usr/local/vcl/vcl_post_load\r\n/etc/init.d/vcl_post_load\n",
            "20-b\r\n10-a\n\n10-a\n",
            "/etc/reimage/post-load.d/",
        );
        let got: Vec<(bool, &str)> = hooks.iter().map(|h| (h.vcl, h.path.as_str())).collect();
        assert_eq!(
            got,
            [
                (true, "/usr/local/vcl/vcl_post_load"),
                (true, "/etc/init.d/vcl_post_load"),
                (false, "/etc/reimage/post-load.d/10-a"),
                (false, "/etc/reimage/post-load.d/20-b")
            ]
        );
        assert_eq!(base(r"C:\Windows\reimage\post-load.d\x.cmd"), "x.cmd");
    }
}
