//! `xcat`: bare metal through the xCAT 2.x command line on the management
//! node, the way Apache VCL's xCAT.pm does it: point the node's network boot
//! at the osimage (`nodeset NODE osimage=IMAGE`), power it on or reset it
//! (`rpower`), then watch the install through `nodestat`, `lsdef -i status`
//! and `nodeset NODE stat` until the node has installed and boots from disk.
//!
//! Loads through one management node are throttled by a counting semaphore
//! in the state directory (`max_concurrent_loads`), because a management
//! node serving too many installs at once makes all of them slow and flaky.
//! The xCAT output is parsed by small pure functions below, written from
//! xCAT's documented formats (`NODE: on`, `NODE: install IMAGE`,
//! `Object name: NODE` / `status=booted`, `Error: ...`).

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use super::Provisioner;
use super::command::per_attempt;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::duration;
use crate::exec::{Cmd, Hints, Output};
use crate::outcome::{Outcome, collapse};
use crate::report::Reporter;
use crate::state::StateDir;
use crate::wait::{self, Limits, Pace, Poll, Waited};

/// The shortest `reload_time` accepted: an xCAT install of a real machine
/// (PXE, installer, package installation, reboot) never takes less.
pub const MIN_RELOAD_TIME: Duration = Duration::from_secs(10 * 60);

/// `[provisioners.NAME] kind = "xcat"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct XcatConfig {
    /// Where xCAT's commands (nodeset, rpower, nodestat, lsdef) live.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// How long a load is expected to take; at least 10 minutes. The stall
    /// and overall timeouts are derived from it unless set.
    #[serde(default = "default_reload_time", deserialize_with = "duration::de")]
    pub reload_time: Duration,
    /// Advanced: give up (retry) when the node's status has not changed for
    /// this long. Default: `reload_time`.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub stall_timeout: Option<Duration>,
    /// Advanced: give up (retry) when the install has not finished after
    /// this long. Default: the larger of 60 minutes and twice `reload_time`.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub overall_timeout: Option<Duration>,
    /// Advanced: the longest pause between two looks at the node's status
    /// (polls start faster and back off to this).
    #[serde(default = "default_poll_interval", deserialize_with = "duration::de")]
    pub poll_interval: Duration,
    /// Loads running at once through this management node (`bin_dir`),
    /// shared by every reimage process using the same state directory.
    #[serde(default = "default_max_concurrent_loads")]
    pub max_concurrent_loads: u32,
    /// Each xCAT command is killed after this long.
    #[serde(default = "default_command_timeout", deserialize_with = "duration::de")]
    pub command_timeout: Duration,
    /// How long a load waits for a free slot before it asks for a retry.
    #[serde(default = "default_slot_wait", deserialize_with = "duration::de")]
    pub slot_wait: Duration,
}

fn default_bin_dir() -> PathBuf {
    PathBuf::from("/opt/xcat/bin")
}

fn default_reload_time() -> Duration {
    Duration::from_secs(20 * 60)
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(15)
}

fn default_max_concurrent_loads() -> u32 {
    10
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(120)
}

fn default_slot_wait() -> Duration {
    Duration::from_secs(30 * 60)
}

impl Default for XcatConfig {
    fn default() -> XcatConfig {
        XcatConfig {
            bin_dir: default_bin_dir(),
            reload_time: default_reload_time(),
            stall_timeout: None,
            overall_timeout: None,
            poll_interval: default_poll_interval(),
            max_concurrent_loads: default_max_concurrent_loads(),
            command_timeout: default_command_timeout(),
            slot_wait: default_slot_wait(),
        }
    }
}

impl XcatConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        if self.bin_dir.as_os_str().is_empty() {
            return Err(
                "`bin_dir` must be the directory of xCAT's commands, e.g. \"/opt/xcat/bin\"".into(),
            );
        }
        if self.reload_time < MIN_RELOAD_TIME {
            return Err(format!(
                "`reload_time` is {}, but an xCAT load takes at least {}: set reload_time = \"10m\" or more (use stall_timeout / overall_timeout to tune the waits)",
                duration::fmt(self.reload_time),
                duration::fmt(MIN_RELOAD_TIME)
            ));
        }
        for (key, v) in [
            ("stall_timeout", self.stall_timeout),
            ("overall_timeout", self.overall_timeout),
            ("poll_interval", Some(self.poll_interval)),
            ("command_timeout", Some(self.command_timeout)),
        ] {
            if v == Some(Duration::ZERO) {
                return Err(format!("`{key}` must be longer than 0s"));
            }
        }
        if self.max_concurrent_loads == 0 {
            return Err("`max_concurrent_loads` must be 1 or more".into());
        }
        Ok(())
    }

    /// The stall timeout at attempt 1.
    pub fn stall(&self) -> Duration {
        self.stall_timeout.unwrap_or(self.reload_time)
    }

    /// The overall install timeout at attempt 1.
    pub fn overall(&self) -> Duration {
        self.overall_timeout
            .unwrap_or_else(|| (self.reload_time * 2).max(Duration::from_secs(60 * 60)))
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        vec![
            format!(
                "xCAT commands: {} (nodeset, rpower, nodestat, lsdef; each killed after {})",
                self.bin_dir.display(),
                duration::fmt(self.command_timeout)
            ),
            format!(
                "xCAT node: {}, osimage: {}",
                plan.computer.node, plan.image.source
            ),
            format!("expected load time: {}", duration::fmt(self.reload_time)),
            format!(
                "stall timeout (no status change): {}",
                per_attempt(self.stall(), plan)
            ),
            format!(
                "overall load timeout: {}",
                per_attempt(self.overall(), plan)
            ),
            format!(
                "concurrent loads through {}: at most {} (waiting up to {} for a slot)",
                self.bin_dir.display(),
                self.max_concurrent_loads,
                duration::fmt(self.slot_wait)
            ),
            format!(
                "status polled every {} at most",
                duration::fmt(self.poll_interval)
            ),
        ]
    }

    /// The semaphore name: one per management node, i.e. per `bin_dir`, so
    /// two provisioner tables that reach the same xCAT share the limit.
    fn slot_name(&self) -> String {
        format!(
            "xcat-{:016x}",
            fnv1a(self.bin_dir.to_string_lossy().as_bytes())
        )
    }
}

/// FNV-1a: a hash that stays the same across builds, for a file name.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// ---------------------------------------------------------------------------
// Parsing xCAT's output. Pure functions over the text, tested below.

/// The lines of a command's output, without CR and surrounding blanks.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .filter(|l| !l.is_empty())
}

/// The value xCAT printed for `node`: `NODE: value` (the usual form) or
/// `NODE   value` (nodestat's documented columns). Lines that carry an
/// error are not values.
pub fn node_value(text: &str, node: &str) -> Option<String> {
    lines(text).find_map(|l| {
        let rest = l.strip_prefix(node)?;
        let value = if let Some(v) = rest.strip_prefix(':') {
            v
        } else if rest.starts_with(char::is_whitespace) {
            rest
        } else {
            return None;
        };
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        (!value.is_empty() && !value.starts_with("Error")).then_some(value)
    })
}

/// The first word of a status value, lower-case: `install` of `install
/// rhels7-x86_64-compute`, `noping` of `noping(Shutting down)`, `ping` of
/// `ping,sshd,ll`.
pub fn status_word(value: &str) -> String {
    value
        .trim()
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | '=' | ':'))
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// A node's power state, from `rpower NODE stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Power {
    /// `on` (or `Running` from an HMC).
    On,
    /// `off` (or `Not Activated` from an HMC).
    Off,
    /// Anything else, as printed.
    Other(String),
}

/// Parses the value of `rpower NODE stat`.
pub fn parse_power(value: &str) -> Power {
    let v = value.trim().to_ascii_lowercase();
    match v.as_str() {
        "on" | "running" => Power::On,
        "off" | "not activated" => Power::Off,
        _ => Power::Other(value.trim().to_string()),
    }
}

/// The `status` attribute from `lsdef -t node -o NODE -i status`:
/// `Object name: NODE` then indented `status=VALUE`. `None` when the node
/// has no status yet.
pub fn lsdef_status(text: &str, node: &str) -> Option<String> {
    let mut in_node = !text.contains("Object name:");
    for l in lines(text) {
        if let Some(name) = l.strip_prefix("Object name:") {
            in_node = name.trim() == node;
            continue;
        }
        if in_node && let Some(v) = l.strip_prefix("status=") {
            let v = v.trim();
            return (!v.is_empty()).then(|| v.to_string());
        }
    }
    None
}

/// What an xCAT error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XcatError {
    /// xCAT does not know the node: loading again cannot help.
    UnknownNode(String),
    /// xCAT does not know the osimage (or cannot use it): loading again
    /// cannot help.
    UnknownImage(String),
    /// The node's or image's xCAT definition is incomplete (no MAC, no
    /// netboot plugin, image never packed): loading again cannot help.
    Definition(String),
    /// Anything else: may pass (BMC busy, xcatd restarting).
    Other(String),
}

impl XcatError {
    /// The error text xCAT printed.
    pub fn text(&self) -> &str {
        match self {
            XcatError::UnknownNode(s)
            | XcatError::UnknownImage(s)
            | XcatError::Definition(s)
            | XcatError::Other(s) => s,
        }
    }
}

/// Finds and classifies the errors in a command's output. xCAT prints
/// `Error: ...` (or `NODE: Error: ...`), sometimes over several lines; the
/// text from the first error line on is joined into one line.
pub fn find_error(text: &str) -> Option<XcatError> {
    let all: Vec<&str> = lines(text).collect();
    let first = all.iter().position(|l| l.contains("Error"))?;
    let err = all[first..]
        .iter()
        .flat_map(|l| l.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ");
    let low = err.to_ascii_lowercase();
    let image = [
        "cannot find the os image",
        "cannot find the osimage",
        "cannot find osimage",
        "of type 'osimage'",
        "install image not found",
    ];
    if image.iter().any(|p| low.contains(p))
        || (low.contains("could not find") && low.contains("osimage"))
    {
        return Some(XcatError::UnknownImage(err));
    }
    if low.contains("invalid nodes and/or groups in noderange") || low.contains("of type 'node'") {
        return Some(XcatError::UnknownNode(err));
    }
    let definition = [
        "no mac address",
        "unable to identify plugin",
        "kernel cannot be found",
        "did you run \"genimage\"",
    ];
    if definition.iter().any(|p| low.contains(p)) {
        return Some(XcatError::Definition(err));
    }
    Some(XcatError::Other(err))
}

/// nodestat words that mean the node is being installed (diskful) or
/// network-booted (diskless).
fn deploying_nodestat(word: &str) -> bool {
    matches!(
        word,
        "install" | "installing" | "netboot" | "netbooting" | "statelite"
    )
}

/// lsdef statuses that mean an install ran after the load started.
fn deploying_status(word: &str) -> bool {
    matches!(
        word,
        "installing" | "netbooting" | "booting" | "postbooting" | "post-booting"
    )
}

/// One look at the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// `nodestat NODE` value.
    pub nodestat: Option<String>,
    /// `lsdef -i status` value.
    pub status: Option<String>,
    /// `nodeset NODE stat` value.
    pub boot: Option<String>,
}

impl Seen {
    /// One line for progress events; a change of it resets the stall timer.
    pub fn line(&self) -> String {
        let f = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
        format!(
            "nodestat: {} · status: {} · nodeset: {}",
            f(&self.nodestat),
            f(&self.status),
            f(&self.boot)
        )
    }
}

/// What the monitor makes of a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Installed and booting from disk (or the diskless image is up).
    Loaded(String),
    /// Still going.
    Going(String),
    /// xCAT says the install failed.
    Failed(String),
}

/// Decides when a load is done. The status a node had before the load
/// (often `booted` and `sshd` from the last image) must not count, so the
/// load is done only after an install state has been seen.
#[derive(Debug, Default)]
pub struct Monitor {
    install_seen: bool,
}

impl Monitor {
    /// Takes one look.
    pub fn observe(&mut self, s: &Seen) -> Verdict {
        let ns = s.nodestat.as_deref().map(status_word).unwrap_or_default();
        let st = s.status.as_deref().map(status_word).unwrap_or_default();
        let boot = s.boot.as_deref().map(status_word).unwrap_or_default();
        if st == "failed" {
            return Verdict::Failed(s.line());
        }
        if deploying_nodestat(&ns) || deploying_status(&st) {
            self.install_seen = true;
        }
        let up = st == "booted" || ns == "sshd" || ns == "booted" || boot == "boot";
        if self.install_seen && up {
            Verdict::Loaded(s.line())
        } else {
            Verdict::Going(s.line())
        }
    }
}

// ---------------------------------------------------------------------------
// The provisioner.

/// The xcat provisioner.
pub struct Xcat {
    config: XcatConfig,
}

impl Xcat {
    /// A xcat provisioner.
    pub fn new(config: XcatConfig) -> Xcat {
        Xcat { config }
    }

    /// Runs one xCAT command with the command timeout. A command that ran
    /// (whatever its exit code) is `Ok`; one that could not start is fatal,
    /// one that hung is retry.
    fn run(&self, plan: &Plan, report: &Reporter, prog: &str, args: &[&str]) -> RunResult {
        let path = self.config.bin_dir.join(prog);
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
                let spawn = format!(
                    "set `bin_dir` of provisioner `{}` to the directory of xCAT's commands (usually /opt/xcat/bin)",
                    plan.provisioner.name
                );
                RunResult::Failed(e.into_outcome(
                    &format!(
                        "computer `{}` (xCAT node `{}`)",
                        plan.computer.name, plan.computer.node
                    ),
                    &shown,
                    Hints {
                        spawn: &spawn,
                        timeout: "check that xcatd on the management node answers (`lsxcatd -a`)",
                    },
                ))
            }
        }
    }

    /// Runs a command that must succeed; its output goes to the event log.
    /// Unknown node or osimage and broken definitions are fatal, anything
    /// else that fails is retry.
    fn must(
        &self,
        plan: &Plan,
        report: &Reporter,
        prog: &str,
        args: &[&str],
    ) -> Result<Output, Outcome> {
        let (shown, out) = match self.run(plan, report, prog, args) {
            RunResult::Ran(s, o) => (s, o),
            RunResult::Failed(o) => return Err(o),
        };
        report.output(&shown, &out);
        let err = find_error(&out.text());
        if out.success() && err.is_none() {
            return Ok(out);
        }
        Err(failure(plan, &shown, &out, err))
    }

    fn power_on(&self, plan: &Plan, report: &Reporter) -> Result<(), Outcome> {
        let node = plan.computer.node.as_str();
        report.step("power", None);
        let out = self.must(plan, report, "rpower", &[node, "stat"])?;
        let before = node_value(&out.stdout, node)
            .map(|v| parse_power(&v))
            .unwrap_or(Power::Other("unknown".into()));
        let action = if before == Power::Off { "on" } else { "reset" };
        report.progress(&format!(
            "power was {}: rpower {action}",
            power_name(&before)
        ));
        self.must(plan, report, "rpower", &[node, action])?;
        let mut last = String::from("unknown");
        for (i, backoff) in [0u64, 1000, 2000].into_iter().enumerate() {
            if i > 0 {
                wait::pause(Duration::from_millis(backoff)).map_err(|e| {
                    Outcome::Fatal(anyhow::anyhow!("computer `{}`: {e}", plan.computer.name))
                })?;
            }
            let out = self.must(plan, report, "rpower", &[node, "stat"])?;
            let p = node_value(&out.stdout, node)
                .map(|v| parse_power(&v))
                .unwrap_or(Power::Other("no answer".into()));
            if p == Power::On {
                report.step_end(true, &format!("rpower {action}: power is on"));
                return Ok(());
            }
            last = power_name(&p);
        }
        report.step_end(false, &format!("power is {last}"));
        Err(Outcome::Retry(anyhow::anyhow!(
            "computer `{}` (xCAT node `{node}`): power is `{last}` after `rpower {node} {action}` (checked 3 times with `rpower {node} stat`); check the node's BMC (`rpower {node} stat`, `rvitals {node}`)",
            plan.computer.name
        )))
    }

    /// Looks at the node once: nodestat, lsdef status, nodeset stat.
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
                    // A hung status command is a moment's trouble; the
                    // stall timeout catches one that stays.
                    let v = Some(format!("no answer from {prog}"));
                    match i {
                        0 => seen.nodestat = v,
                        1 => seen.status = v,
                        _ => seen.boot = v,
                    }
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
                    failure(plan, &shown, &out, Some(e.clone()))
                        .error()
                        .map(|e| anyhow::anyhow!("{e:#}"))
                        .unwrap_or_else(|| anyhow::anyhow!("`{shown}` failed")),
                ));
            }
            let value = match (prog, &err) {
                (_, Some(e)) => Some(format!("error ({})", excerpt_or_none(e.text()))),
                ("lsdef", None) => lsdef_status(&out.stdout, node),
                (_, None) => node_value(&out.stdout, node),
            };
            match i {
                0 => seen.nodestat = value,
                1 => seen.status = value,
                _ => seen.boot = value,
            }
        }
        Ok(seen)
    }

    fn monitor(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Result<(), Outcome> {
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
        let mut monitor = Monitor::default();
        let mut logged: [String; 3] = Default::default();
        let mut failed: Option<String> = None;
        let waited = wait::poll(report, limits, pace, |_| {
            let seen = match self.look(plan, report, &mut logged) {
                Ok(s) => s,
                Err(p) => return p,
            };
            match monitor.observe(&seen) {
                Verdict::Loaded(s) => Poll::Ready(s),
                Verdict::Going(s) => Poll::NotYet(s),
                Verdict::Failed(s) => {
                    failed = Some(s.clone());
                    Poll::Fatal(anyhow::anyhow!("{s}"))
                }
            }
        });
        let node = &plan.computer.node;
        let who = format!("computer `{}` (xCAT node `{node}`)", plan.computer.name);
        match waited {
            Waited::Ready(s, took) => {
                report.progress(&s);
                report.step_end(
                    true,
                    &format!("installed after {}: {s}", duration::fmt(took)),
                );
                Ok(())
            }
            Waited::Fatal(e) => {
                report.step_end(false, &format!("{e:#}"));
                match failed {
                    Some(s) => Err(Outcome::Retry(anyhow::anyhow!(
                        "{who}: xCAT reports the install of osimage `{}` failed ({s}); see /var/log/xcat/computes.log on the management node",
                        plan.image.source
                    ))),
                    None => Err(Outcome::Fatal(e)),
                }
            }
            Waited::Interrupted(i) => {
                report.step_end(false, &i.to_string());
                Err(Outcome::Fatal(anyhow::anyhow!("{who}: {i}")))
            }
            w @ (Waited::TimedOut(_) | Waited::Stalled(..)) => {
                let what = format!("install of osimage `{}`", plan.image.source);
                let text = wait::describe(&w, &what, overall);
                report.step_end(false, &text);
                Err(Outcome::Retry(anyhow::anyhow!(
                    "{who}: {text}; watch it with `rcons {node}` and `nodestat {node}`"
                )))
            }
        }
    }

    fn load_steps(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Result<(), Outcome> {
        let c = &self.config;
        let node = plan.computer.node.as_str();
        let who = format!("computer `{}` (xCAT node `{node}`)", plan.computer.name);
        report.info(&format!(
            "loading osimage `{}` onto xCAT node `{node}` through {}",
            plan.image.source,
            c.bin_dir.display()
        ));

        // 1. A load slot on this management node.
        report.step("load slot", Some(c.slot_wait));
        let max = c.max_concurrent_loads;
        let state = StateDir::new(&plan.state_dir);
        let slot = state
            .acquire_slot(&c.slot_name(), max, c.slot_wait, |_| {
                report.progress(&format!("waiting for a load slot: {max}/{max} busy"));
            })
            .map_err(|e| Outcome::Fatal(e.context(format!("{who}: taking a load slot"))))?;
        let Some(slot) = slot else {
            report.step_end(false, "no load slot");
            return Err(Outcome::Retry(anyhow::anyhow!(
                "{who}: all {max} xCAT load slots stayed busy for {}; raise `max_concurrent_loads` or `slot_wait` of provisioner `{}`, or load fewer computers at once",
                duration::fmt(c.slot_wait),
                plan.provisioner.name
            )));
        };
        report.step_end(true, &format!("load slot {} of {max}", slot.index + 1));

        // 2. Network boot into the osimage.
        report.step("nodeset", None);
        let osimage = format!("osimage={}", plan.image.source);
        let out = self.must(plan, report, "nodeset", &[node, &osimage])?;
        report.step_end(
            true,
            &node_value(&out.stdout, node).unwrap_or_else(|| "set".into()),
        );

        // 3. Power on, or reset if it is on.
        self.power_on(plan, report)?;

        // 4. Watch the install; the slot is held until it is done.
        let r = self.monitor(plan, attempt, report);
        drop(slot);
        r
    }
}

/// What running a command gave.
enum RunResult {
    /// It ran: the command line and its output.
    Ran(String, Output),
    /// It could not run or was killed: the outcome.
    Failed(Outcome),
}

/// The outcome of a failed xCAT command, with a message that names the
/// computer, node and command, and says what to check.
fn failure(plan: &Plan, shown: &str, out: &Output, err: Option<XcatError>) -> Outcome {
    let node = &plan.computer.node;
    let who = format!("computer `{}` (xCAT node `{node}`)", plan.computer.name);
    let said = err
        .as_ref()
        .map(|e| e.text().to_string())
        .unwrap_or_else(|| excerpt_or_none(&out.text()));
    match err {
        Some(XcatError::UnknownNode(_)) => Outcome::Fatal(anyhow::anyhow!(
            "{who}: xCAT does not know node `{node}`: `{shown}` said: {said}; check `lsdef -t node -o {node}` and the computer's `node` key"
        )),
        Some(XcatError::UnknownImage(_)) => Outcome::Fatal(anyhow::anyhow!(
            "{who}: xCAT has no usable osimage `{}` (image `{}`): `{shown}` said: {said}; check `lsdef -t osimage` for the image name and the image's `source` key",
            plan.image.source,
            plan.image.name
        )),
        Some(XcatError::Definition(_)) => Outcome::Fatal(anyhow::anyhow!(
            "{who}: xCAT cannot set up the load: `{shown}` said: {said}; fix the node or osimage definition (`lsdef {node}`, `lsdef -t osimage {}`)",
            plan.image.source
        )),
        _ => Outcome::Retry(anyhow::anyhow!(
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
fn excerpt_or_none(s: &str) -> String {
    match crate::exec::excerpt(s, 5) {
        t if t.is_empty() => "no output".into(),
        t => t,
    }
}

impl Provisioner for Xcat {
    fn describe(&self, plan: &Plan) -> Vec<String> {
        self.config.describe(plan)
    }

    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome {
        collapse(self.load_steps(plan, attempt, report))
    }

    fn power_reset(&self, plan: &Plan, _attempt: Attempt, report: &Reporter) -> Option<Outcome> {
        let node = plan.computer.node.as_str();
        Some(collapse(
            self.must(plan, report, "rpower", &[node, "reset"])
                .map(|_| ()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_node_values_in_both_layouts() {
        assert_eq!(node_value("node1: on\n", "node1").as_deref(), Some("on"));
        assert_eq!(
            node_value("node1: off\r\n", "node1").as_deref(),
            Some("off")
        );
        assert_eq!(
            node_value(
                "node10: on\nnode1:   install  rhels7-x86_64-compute \r\n",
                "node1"
            )
            .as_deref(),
            Some("install rhels7-x86_64-compute")
        );
        assert_eq!(
            node_value("node1   sshd\n", "node1").as_deref(),
            Some("sshd")
        );
        assert_eq!(
            node_value("  node1: ping netboot rhels7\n", "node1").as_deref(),
            Some("ping netboot rhels7")
        );
        assert_eq!(node_value("node1: Error: BMC busy\n", "node1"), None);
        assert_eq!(node_value("node12: on\n", "node1"), None);
        assert_eq!(node_value("", "node1"), None);
    }

    #[test]
    fn status_words() {
        assert_eq!(status_word("install rhels7-x86_64-compute"), "install");
        assert_eq!(status_word("noping(Shutting down)"), "noping");
        assert_eq!(status_word("ping,sshd,ll,gpfs=ok"), "ping");
        assert_eq!(status_word("SSHD"), "sshd");
        assert_eq!(status_word(""), "");
    }

    #[test]
    fn power_states() {
        assert_eq!(parse_power("on"), Power::On);
        assert_eq!(parse_power(" off "), Power::Off);
        assert_eq!(parse_power("Running"), Power::On);
        assert_eq!(parse_power("Not Activated"), Power::Off);
        assert_eq!(
            parse_power("Open Firmware"),
            Power::Other("Open Firmware".into())
        );
    }

    #[test]
    fn lsdef_status_of_the_node() {
        let t = "Object name: node1\n    status=booted\n    statustime=02-26-2013 14:10:57\n";
        assert_eq!(lsdef_status(t, "node1").as_deref(), Some("booted"));
        let crlf = "Object name: node1\r\n    status=installing\r\n";
        assert_eq!(lsdef_status(crlf, "node1").as_deref(), Some("installing"));
        let two =
            "Object name: node2\n    status=booted\nObject name: node1\n    status=netbooting\n";
        assert_eq!(lsdef_status(two, "node1").as_deref(), Some("netbooting"));
        assert_eq!(lsdef_status("Object name: node1\n", "node1"), None);
        assert_eq!(
            lsdef_status("Object name: node1\n    status=\n", "node1"),
            None
        );
    }

    #[test]
    fn classifies_errors() {
        let e =
            find_error("Error: [mgmt]: Could not find an object named 'node9' of type 'node'.\n");
        assert!(matches!(e, Some(XcatError::UnknownNode(_))), "{e:?}");
        let e = find_error("Error: Invalid nodes and/or groups in noderange: node9\n");
        assert!(matches!(e, Some(XcatError::UnknownNode(_))), "{e:?}");
        let e = find_error(
            "Error: Cannot find the OS image nonexistent-osimage on the osimage table.\n",
        );
        assert!(matches!(e, Some(XcatError::UnknownImage(_))), "{e:?}");
        let e = find_error("Error: Could not find an object named 'x'\n   of type 'osimage'.\n");
        assert!(matches!(e, Some(XcatError::UnknownImage(_))), "{e:?}");
        let e = find_error(
            "node1 has provmethod=img\nError: cannot find osimage \"img\" for node1, please make sure the osimage specified in command line or node.provmethod exists!\n",
        );
        assert!(matches!(e, Some(XcatError::UnknownImage(_))), "{e:?}");
        let e = find_error("fake3: Error: No MAC address available\n");
        assert!(matches!(e, Some(XcatError::Definition(_))), "{e:?}");
        let e = find_error("node1: Error: Unable to get IPMI session\nretry later\n");
        assert_eq!(
            e,
            Some(XcatError::Other(
                "node1: Error: Unable to get IPMI session retry later".into()
            ))
        );
        assert_eq!(find_error("node1: install rhels7-x86_64-compute\n"), None);
    }

    fn seen(ns: &str, st: &str, boot: &str) -> Seen {
        let o = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Seen {
            nodestat: o(ns),
            status: o(st),
            boot: o(boot),
        }
    }

    #[test]
    fn stale_booted_does_not_count() {
        let mut m = Monitor::default();
        let stale = seen("sshd", "booted", "install rhels7");
        assert!(matches!(m.observe(&stale), Verdict::Going(_)));
        assert!(matches!(
            m.observe(&seen("noping", "powering-on", "install rhels7")),
            Verdict::Going(_)
        ));
        assert!(matches!(
            m.observe(&seen("install rhels7", "installing", "install rhels7")),
            Verdict::Going(_)
        ));
        assert!(matches!(
            m.observe(&seen("noping", "installing", "boot")),
            Verdict::Loaded(_)
        ));
    }

    #[test]
    fn loaded_by_any_of_the_three_signs() {
        for done in [
            seen("ping", "booted", "install x"),
            seen("sshd", "booting", "install x"),
            seen("noping", "installing", "boot"),
        ] {
            let mut m = Monitor::default();
            m.observe(&seen("install x", "", "install x"));
            assert!(matches!(m.observe(&done), Verdict::Loaded(_)), "{done:?}");
        }
        let mut m = Monitor::default();
        assert!(matches!(
            m.observe(&seen("noping", "failed", "install x")),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn config_limits() {
        let c = XcatConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.stall(), c.reload_time);
        assert_eq!(c.overall(), Duration::from_secs(3600));
        let c = XcatConfig {
            reload_time: Duration::from_secs(45 * 60),
            ..XcatConfig::default()
        };
        assert_eq!(c.overall(), Duration::from_secs(90 * 60));
        let c = XcatConfig {
            reload_time: Duration::from_secs(5 * 60),
            ..XcatConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("reload_time"));
        let c = XcatConfig {
            max_concurrent_loads: 0,
            ..XcatConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn slot_name_is_stable_per_bin_dir() {
        let a = XcatConfig::default();
        assert_eq!(a.slot_name(), XcatConfig::default().slot_name());
        let b = XcatConfig {
            bin_dir: "/other".into(),
            ..XcatConfig::default()
        };
        assert_ne!(a.slot_name(), b.slot_name());
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
