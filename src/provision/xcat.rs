//! `xcat`: bare metal through the xCAT 2.x command line on the management
//! node, the way Apache VCL's xCAT.pm does it: point the node's network boot
//! at the osimage (`nodeset NODE osimage=IMAGE`), power it on or reset it
//! (`rpower NODE boot`), then watch the install through `nodestat`,
//! `lsdef -i status` and `nodeset NODE stat` until xCAT shows that the
//! install ran and ended.
//!
//! What xCAT's answers mean here, and where that comes from (xcat2/xcat-core
//! unless named otherwise):
//! - The commands live in an xCAT root (`$XCATROOT`, else /opt/xcat):
//!   `sbin/nodeset`, `bin/rpower`, `bin/nodestat`, `bin/lsdef`
//!   (xCAT-client.spec; VCL's xCAT.pm runs them from there too).
//! - Answers are `NODE: value` lines; errors carry `Error:` and go to stderr
//!   (xCAT/Client.pm `handle_response`). A client that cannot reach xcatd
//!   prints "Unable to open socket connection to xcatd daemon".
//! - `nodeset NODE osimage=IMAGE` answers the new boot state, `install
//!   OS-ARCH-PROFILE` for a diskful image, `netboot ...`/`statelite ...` for
//!   a diskless one (plugins/destiny.pm). At the end of an install the
//!   node's postscript asks xcatd for `next` and the state becomes `boot`
//!   (scripts/post.xcat.ng, sbin/xcatd, destiny.pm `nextdestiny`): the one
//!   mark that the install ran to its end. A diskless node keeps `netboot`.
//! - `nodestat` prints the open application ports (`sshd`, `https,sshd`:
//!   sorted, comma-joined); else the installer's own answer on port 3001
//!   (`installing prep`); else, when the node pings, its `nodeset stat`
//!   (so `install ...` only echoes the state reimage just set); else
//!   `noping` (plugins/nodestat.pm). During an install with
//!   `site.xcatdebugmode=2` the installer runs sshd (plugins/anaconda.pm
//!   `inst.sshd`), so `sshd` does not mean the install is over (VCL's load()
//!   guards this too).
//! - `status` goes `powering-on` (rpower, plugins/ipmi.pm), `installing`
//!   (the installer's %pre), `postbooting` and `booted` (first boot,
//!   postscripts/xcatpostinit1.install); diskless: `netbooting`, `booted`
//!   (xcatdsklspost); `failed` from a failing postscript. A node xCAT
//!   installed once reports `booted` on EVERY boot, so `booted` while
//!   nodeset still says `install` and no install was seen is a node that
//!   missed its network boot and started its old system.
//! - `rpower NODE reset` of a node that is off answers `NODE: off` and does
//!   nothing; `rpower NODE boot` powers on a node that is off and resets
//!   one that is on (plugins/ipmi.pm, rpower.1). An HMC reports `Running`,
//!   `Operating`, `Open Firmware` (on) or `Not Activated` (off)
//!   (xCAT/PPCpower.pm). VCL retries rpower up to 3 times and waits up to
//!   60 s for `on`.
//!
//! Loads through one management node are limited (`max_concurrent_loads`),
//! counting both reimage's own loads (a semaphore in the state directory)
//! and the installs xCAT itself shows (`nodeset RANGE stat` in `install` or
//! `image` state, as VCL's `_is_throttle_limit_reached` counts), so loads
//! an admin started with `rinstall` or another host started count too.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
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

/// The shortest `reload_time` accepted: an xCAT install of a real machine
/// (PXE, installer, package installation, reboot) never takes less.
pub const MIN_RELOAD_TIME: Duration = Duration::from_secs(10 * 60);

/// The xCAT root when neither `xcat_root` nor `$XCATROOT` says otherwise.
pub const DEFAULT_XCAT_ROOT: &str = "/opt/xcat";

/// `[provisioners.NAME] kind = "xcat"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct XcatConfig {
    /// Where xCAT is installed. Default: `$XCATROOT`, else /opt/xcat.
    #[serde(default)]
    pub xcat_root: Option<PathBuf>,
    /// The `nodeset` command. Default: `XCAT_ROOT/sbin/nodeset`.
    #[serde(default)]
    pub nodeset: Option<PathBuf>,
    /// The `rpower` command. Default: `XCAT_ROOT/bin/rpower`.
    #[serde(default)]
    pub rpower: Option<PathBuf>,
    /// The `nodestat` command. Default: `XCAT_ROOT/bin/nodestat`.
    #[serde(default)]
    pub nodestat: Option<PathBuf>,
    /// The `lsdef` command. Default: `XCAT_ROOT/bin/lsdef`.
    #[serde(default)]
    pub lsdef: Option<PathBuf>,
    /// Replaced by `xcat_root`; read only to say so.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
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
    /// Loads running at once through this management node: reimage's own
    /// (shared by every reimage process using the same state directory)
    /// and those xCAT shows in install state.
    #[serde(default = "default_max_concurrent_loads")]
    pub max_concurrent_loads: u32,
    /// The xCAT noderange whose installs count toward the limit.
    #[serde(default = "default_limit_noderange")]
    pub limit_noderange: String,
    /// Each xCAT command is killed after this long.
    #[serde(default = "default_command_timeout", deserialize_with = "duration::de")]
    pub command_timeout: Duration,
    /// How long a load waits for a free slot before it asks for a retry.
    #[serde(default = "default_slot_wait", deserialize_with = "duration::de")]
    pub slot_wait: Duration,
    /// How often a power command is tried within one attempt when the BMC
    /// fails or power does not come on.
    #[serde(default = "default_power_tries")]
    pub power_tries: u32,
    /// How long `rpower NODE stat` may take to say `on` after each try.
    #[serde(default = "default_power_wait", deserialize_with = "duration::de")]
    pub power_wait: Duration,
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

fn default_limit_noderange() -> String {
    "all".into()
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(120)
}

fn default_slot_wait() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_power_tries() -> u32 {
    3
}

fn default_power_wait() -> Duration {
    Duration::from_secs(60)
}

impl Default for XcatConfig {
    fn default() -> XcatConfig {
        XcatConfig {
            xcat_root: None,
            nodeset: None,
            rpower: None,
            nodestat: None,
            lsdef: None,
            bin_dir: None,
            reload_time: default_reload_time(),
            stall_timeout: None,
            overall_timeout: None,
            poll_interval: default_poll_interval(),
            max_concurrent_loads: default_max_concurrent_loads(),
            limit_noderange: default_limit_noderange(),
            command_timeout: default_command_timeout(),
            slot_wait: default_slot_wait(),
            power_tries: default_power_tries(),
            power_wait: default_power_wait(),
        }
    }
}

/// The four xCAT commands reimage runs.
const COMMANDS: [&str; 4] = ["nodeset", "rpower", "nodestat", "lsdef"];

impl XcatConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = &self.bin_dir {
            return Err(format!(
                "`bin_dir` (here \"{}\") is no longer read: a stock xCAT puts nodeset in sbin/ and rpower, nodestat and lsdef in bin/ of its root, so reimage now finds them from `xcat_root` (default: $XCATROOT, else /opt/xcat). Remove `bin_dir`, or set `xcat_root = \"/opt/xcat\"`, or name a command that lives elsewhere, e.g. `nodeset = \"{}/nodeset\"`",
                b.display(),
                b.display()
            ));
        }
        for (key, v) in [
            ("xcat_root", &self.xcat_root),
            ("nodeset", &self.nodeset),
            ("rpower", &self.rpower),
            ("nodestat", &self.nodestat),
            ("lsdef", &self.lsdef),
        ] {
            if v.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(format!("`{key}` must not be empty"));
            }
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
            ("power_wait", Some(self.power_wait)),
        ] {
            if v == Some(Duration::ZERO) {
                return Err(format!("`{key}` must be longer than 0s"));
            }
        }
        if self.max_concurrent_loads == 0 {
            return Err("`max_concurrent_loads` must be 1 or more".into());
        }
        if self.power_tries == 0 {
            return Err("`power_tries` must be 1 or more".into());
        }
        if self.limit_noderange.trim().is_empty()
            || self.limit_noderange.contains(char::is_whitespace)
        {
            return Err(
                "`limit_noderange` must be one xCAT noderange, e.g. \"all\" or \"compute\"".into(),
            );
        }
        Ok(())
    }

    /// The xCAT root: `xcat_root`, else `$XCATROOT`, else /opt/xcat (what
    /// xCAT's own client does, xCAT-client/bin/xcatclient).
    pub fn root(&self) -> PathBuf {
        if let Some(r) = &self.xcat_root {
            return r.clone();
        }
        match std::env::var_os("XCATROOT") {
            Some(r) if !r.is_empty() => PathBuf::from(r),
            _ => PathBuf::from(DEFAULT_XCAT_ROOT),
        }
    }

    /// Where command `prog` is: its override, else where xCAT installs it.
    pub fn command(&self, prog: &str) -> PathBuf {
        let over = match prog {
            "nodeset" => &self.nodeset,
            "rpower" => &self.rpower,
            "nodestat" => &self.nodestat,
            _ => &self.lsdef,
        };
        if let Some(p) = over {
            return p.clone();
        }
        let dir = if prog == "nodeset" { "sbin" } else { "bin" };
        self.root().join(dir).join(prog)
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

    /// The management node reimage talks to: xcatd at `$XCATHOST`, else
    /// localhost:3001 (xCAT/Client.pm).
    fn xcatd(&self) -> String {
        std::env::var("XCATHOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost:3001".into())
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        let cmds = COMMANDS
            .iter()
            .map(|c| self.command(c).display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            format!(
                "xCAT commands: {cmds} (each killed after {})",
                duration::fmt(self.command_timeout)
            ),
            format!(
                "xCAT node: {}, osimage: {}",
                plan.computer.node, plan.image.source
            ),
            format!("expected load time: {}", duration::fmt(self.reload_time)),
            format!(
                "stall timeout (no status change): {}",
                plan.per_attempt(self.stall())
            ),
            format!("overall load timeout: {}", plan.per_attempt(self.overall())),
            format!(
                "concurrent loads through xcatd at {}: at most {}, counting reimage's and the installs xCAT shows in `nodeset {} stat` (waiting up to {} for a slot)",
                self.xcatd(),
                self.max_concurrent_loads,
                self.limit_noderange,
                duration::fmt(self.slot_wait)
            ),
            format!(
                "power: `rpower NODE boot`, up to {} tries, each waiting up to {} for `rpower NODE stat` to say on",
                self.power_tries,
                duration::fmt(self.power_wait)
            ),
            format!(
                "status polled every {} at most",
                duration::fmt(self.poll_interval)
            ),
        ]
    }

    /// The semaphore name: one per management node, i.e. per xcatd address
    /// and nodeset command, so two provisioner tables that reach the same
    /// xCAT share the limit.
    fn slot_name(&self) -> String {
        let key = format!("{}@{}", self.command("nodeset").display(), self.xcatd());
        format!("xcat-{:016x}", fnv1a(key.as_bytes()))
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

/// The value xCAT printed for `node`: `NODE: value` (Client.pm's form) or
/// `NODE   value` (the columns in nodestat's man page). Lines that carry an
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
        (!value.is_empty() && !value.contains("Error:")).then_some(value)
    })
}

/// Every `NODE: value` line of a multi-node answer (`nodeset all stat`).
pub fn node_values(text: &str) -> Vec<(String, String)> {
    lines(text)
        .filter(|l| !l.contains("Error:"))
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            let (n, v) = (n.trim(), v.trim());
            (!n.is_empty() && !n.contains(char::is_whitespace) && !v.is_empty())
                .then(|| (n.to_string(), v.to_string()))
        })
        .collect()
}

/// The first word of a status value, lower-case: `install` of `install
/// rhels7-x86_64-compute`, `noping` of `noping(off)`.
pub fn status_word(value: &str) -> String {
    value
        .trim()
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | '=' | ':'))
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Boot states `nodeset` sets (destiny.pm), which nodestat echoes for a
/// node that pings with no known port open.
const NODESET_STATES: [&str; 12] = [
    "install",
    "netboot",
    "statelite",
    "boot",
    "image",
    "shell",
    "standby",
    "runcmd",
    "runimage",
    "offline",
    "discover",
    "iscsiboot",
];

/// What one `nodestat` value says (plugins/nodestat.pm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStat {
    /// The node does not ping (`noping`, `noping(off)` with `-p`).
    Noping,
    /// Application ports are open (`sshd`, `https,sshd`, `ping,sshd,ll`
    /// with `-m`): a running system, or an installer with sshd.
    Apps(Vec<String>),
    /// The node pings, nothing is open: its nodeset state, echoed.
    Echo(String),
    /// The installer's own answer on port 3001 (`installing prep`,
    /// `installing bash (42%)`; VCL's load() also matches `partimage`).
    Installer(String),
    /// Anything else, as printed.
    Other(String),
}

/// Reads a `nodestat` value.
pub fn parse_nodestat(value: &str) -> NodeStat {
    let v = value.trim();
    let word = status_word(v);
    if word == "noping" {
        return NodeStat::Noping;
    }
    if NODESET_STATES.contains(&word.as_str()) {
        return NodeStat::Echo(v.to_string());
    }
    if word.starts_with("installing") || word.starts_with("partimage") {
        return NodeStat::Installer(v.to_string());
    }
    // Application lists are comma-joined names, maybe with `=state` (-m).
    let first = v.split(',').next().unwrap_or("");
    if !first.is_empty() && !first.contains(' ') {
        let apps: Vec<String> = v
            .split(',')
            .map(|a| {
                a.split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|a| !a.is_empty() && a != "ping")
            .collect();
        return if apps.is_empty() {
            NodeStat::Echo(v.to_string())
        } else {
            NodeStat::Apps(apps)
        };
    }
    NodeStat::Other(v.to_string())
}

/// A node's power state, from `rpower NODE stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Power {
    /// `on` (an HMC: `Running`, `Operating`, `Open Firmware`).
    On,
    /// `off` (an HMC: `Not Activated`).
    Off,
    /// Anything else, as printed.
    Other(String),
}

/// Parses the value of `rpower NODE stat` (ipmi.pm; PPCpower.pm for HMCs).
pub fn parse_power(value: &str) -> Power {
    let v = value.trim().to_ascii_lowercase();
    match v.as_str() {
        "on" | "running" | "operating" | "open firmware" => Power::On,
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
    /// xcatd does not answer (Client.pm cannot connect).
    Daemon(String),
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
            | XcatError::Daemon(s)
            | XcatError::Other(s) => s,
        }
    }
}

/// Finds and classifies the errors in a command's output. xCAT prints
/// `Error: ...` (or `NODE: Error: ...`), sometimes over several lines; the
/// text from the first error line on is joined into one line.
pub fn find_error(text: &str) -> Option<XcatError> {
    let all: Vec<&str> = lines(text).collect();
    if let Some(i) = all
        .iter()
        .position(|l| l.contains("Unable to open socket connection to xcatd"))
    {
        return Some(XcatError::Daemon(all[i..].join(" ")));
    }
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
        "nodetype.os not defined",
        "nodetype.arch not defined",
        "nodetype.profile not defined",
    ];
    if definition.iter().any(|p| low.contains(p)) {
        return Some(XcatError::Definition(err));
    }
    Some(XcatError::Other(err))
}

/// What the osimage installs, from `nodeset NODE osimage=` (destiny.pm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// `install ...`: the node installs to disk; nodeset goes back to
    /// `boot` at the end.
    Diskful,
    /// `netboot ...` / `statelite ...`: the node boots the image over the
    /// network every time; nodeset stays.
    Diskless,
}

impl ImageKind {
    /// From the state `nodeset NODE osimage=` answered.
    pub fn of_state(state: &str) -> ImageKind {
        match status_word(state).as_str() {
            "netboot" | "statelite" => ImageKind::Diskless,
            _ => ImageKind::Diskful,
        }
    }
}

/// One look at the node; `None` where a command gave no usable answer.
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
    /// One line for progress events. It changes only when an answer
    /// changes: a command without an answer keeps the last one, so a
    /// status command that times out now and then does not count as
    /// progress for the stall timer.
    pub fn line(&self) -> String {
        let f = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
        format!(
            "nodestat: {} · status: {} · nodeset: {}",
            f(&self.nodestat),
            f(&self.status),
            f(&self.boot)
        )
    }

    /// Takes the answers of `new`, keeping the last ones where it has none.
    pub fn merge(&mut self, new: &Seen) {
        for (mine, theirs) in [
            (&mut self.nodestat, &new.nodestat),
            (&mut self.status, &new.status),
            (&mut self.boot, &new.boot),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
    }
}

/// What the monitor makes of a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// xCAT shows that the install ran and ended (or that the diskless
    /// image booted).
    Loaded(String),
    /// Still going.
    Going(String),
    /// xCAT says the install failed.
    Failed(String),
    /// The node started the system on its disk instead of network-booting
    /// into the install.
    Missed(String),
}

impl Verdict {
    /// What was seen.
    pub fn text(&self) -> &str {
        match self {
            Verdict::Loaded(s) | Verdict::Going(s) | Verdict::Failed(s) | Verdict::Missed(s) => s,
        }
    }
}

/// Decides when a load is done, on evidence that the install ran and
/// ended, never on what the node showed before the load or on a running
/// sshd alone.
#[derive(Debug)]
pub struct Monitor {
    kind: ImageKind,
    /// The install (or diskless boot) was seen running: status
    /// `installing` / `netbooting`, or the installer answered nodestat.
    install_seen: bool,
    /// A status other than `booted` was seen during this load, so a
    /// `booted` now is new, not left from before.
    fresh: bool,
    /// The application ports the node answered on while no install was
    /// seen (for the stall message).
    up_without_install: Option<String>,
}

impl Monitor {
    /// A monitor for an image of `kind`.
    pub fn new(kind: ImageKind) -> Monitor {
        Monitor {
            kind,
            install_seen: false,
            fresh: false,
            up_without_install: None,
        }
    }

    /// True once the install was seen running.
    pub fn install_seen(&self) -> bool {
        self.install_seen
    }

    /// The ports the node answered on while no install had been seen.
    pub fn up_without_install(&self) -> Option<&str> {
        self.up_without_install.as_deref()
    }

    /// Takes one look.
    pub fn observe(&mut self, s: &Seen) -> Verdict {
        let st = s.status.as_deref().map(status_word).unwrap_or_default();
        let boot = s.boot.as_deref().map(status_word);
        let ns = s.nodestat.as_deref().map(parse_nodestat);
        if st == "failed" {
            return Verdict::Failed(s.line());
        }
        let running = match self.kind {
            ImageKind::Diskful => st == "installing",
            ImageKind::Diskless => st == "netbooting",
        };
        if running || matches!(ns, Some(NodeStat::Installer(_))) {
            self.install_seen = true;
        }
        let booted = st == "booted";
        if !st.is_empty() && !booted {
            self.fresh = true;
        }
        if !self.install_seen
            && let Some(NodeStat::Apps(a)) = &ns
        {
            self.up_without_install = Some(a.join(","));
        }
        match self.kind {
            ImageKind::Diskful => {
                // nodeset back at `boot`: the installer's postscript asked
                // for `next` at the end of the install.
                if boot.as_deref() == Some("boot") || (self.install_seen && booted) {
                    return Verdict::Loaded(s.line());
                }
            }
            ImageKind::Diskless => {
                if self.install_seen && booted {
                    return Verdict::Loaded(s.line());
                }
            }
        }
        if booted && self.fresh && !self.install_seen {
            return Verdict::Missed(s.line());
        }
        Verdict::Going(s.line())
    }
}

// ---------------------------------------------------------------------------
// The provisioner.

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
            out.status
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
        assert_eq!(node_value("node1: [mgmt]: Error: timeout\n", "node1"), None);
        assert_eq!(node_value("node12: on\n", "node1"), None);
        assert_eq!(node_value("", "node1"), None);
    }

    #[test]
    fn reads_every_node_of_a_noderange() {
        let t = "n1: boot\nn2: install rhels7.9-x86_64-compute\nn3: netboot rhels8-x86_64-compute\nn4: [mgmt]: Error: x\n";
        assert_eq!(
            node_values(t),
            vec![
                ("n1".to_string(), "boot".to_string()),
                ("n2".into(), "install rhels7.9-x86_64-compute".into()),
                ("n3".into(), "netboot rhels8-x86_64-compute".into()),
            ]
        );
    }

    #[test]
    fn nodestat_answers_of_every_kind() {
        assert_eq!(parse_nodestat("noping"), NodeStat::Noping);
        assert_eq!(parse_nodestat("noping(off)"), NodeStat::Noping);
        assert_eq!(parse_nodestat("sshd"), NodeStat::Apps(vec!["sshd".into()]));
        assert_eq!(
            parse_nodestat("https,sshd"),
            NodeStat::Apps(vec!["https".into(), "sshd".into()])
        );
        assert_eq!(
            parse_nodestat("pbs,sshd"),
            NodeStat::Apps(vec!["pbs".into(), "sshd".into()])
        );
        assert_eq!(
            parse_nodestat("ping,sshd,ll,gpfs=not ok,someapp=something is wrong"),
            NodeStat::Apps(vec![
                "sshd".into(),
                "ll".into(),
                "gpfs".into(),
                "someapp".into()
            ])
        );
        assert_eq!(parse_nodestat("ping"), NodeStat::Echo("ping".into()));
        assert_eq!(
            parse_nodestat("install rhels7.9-x86_64-compute"),
            NodeStat::Echo("install rhels7.9-x86_64-compute".into())
        );
        assert_eq!(parse_nodestat("boot"), NodeStat::Echo("boot".into()));
        assert_eq!(
            parse_nodestat("Please make sure n1 exists in /etc/hosts"),
            NodeStat::Other("Please make sure n1 exists in /etc/hosts".into())
        );
        assert_eq!(
            parse_nodestat("installing prep"),
            NodeStat::Installer("installing prep".into())
        );
        assert_eq!(
            parse_nodestat("installing bash (42%)"),
            NodeStat::Installer("installing bash (42%)".into())
        );
    }

    #[test]
    fn power_states() {
        assert_eq!(parse_power("on"), Power::On);
        assert_eq!(parse_power(" off "), Power::Off);
        assert_eq!(parse_power("Running"), Power::On);
        assert_eq!(parse_power("Operating"), Power::On);
        assert_eq!(parse_power("Open Firmware"), Power::On);
        assert_eq!(parse_power("Not Activated"), Power::Off);
        assert_eq!(parse_power("Starting"), Power::Other("Starting".into()));
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
        let e = find_error("Error: [mgmt]: Invalid nodes and/or groups in noderange: node9\n");
        assert!(matches!(e, Some(XcatError::UnknownNode(_))), "{e:?}");
        let e = find_error(
            "Error: [mgmt]: Cannot find the OS image nonexistent-osimage in the osimage table.\n",
        );
        assert!(matches!(e, Some(XcatError::UnknownImage(_))), "{e:?}");
        let e = find_error("node1: [mgmt]: Error: No MAC address available for this node\n");
        assert!(matches!(e, Some(XcatError::Definition(_))), "{e:?}");
        let e = find_error("node1: [mgmt]: Error: timeout\n");
        assert_eq!(
            e,
            Some(XcatError::Other("node1: [mgmt]: Error: timeout".into()))
        );
        let e = find_error(
            "Unable to open socket connection to xcatd daemon on localhost:3001.\nVerify that the xcatd daemon is running and that your SSL setup is correct.\nConnection failure: refused\n",
        );
        assert!(matches!(e, Some(XcatError::Daemon(_))), "{e:?}");
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

    const INSTALL: &str = "install rhels7.9-x86_64-compute";

    fn going(v: Verdict) -> bool {
        matches!(v, Verdict::Going(_))
    }

    #[test]
    fn diskful_ends_only_when_nodeset_is_back_at_boot() {
        let mut m = Monitor::new(ImageKind::Diskful);
        // Left from before the load: not an end.
        assert!(going(m.observe(&seen("sshd", "booted", INSTALL))));
        assert!(going(m.observe(&seen("noping", "powering-on", INSTALL))));
        assert!(going(m.observe(&seen(
            "installing prep",
            "installing",
            INSTALL
        ))));
        // xcatdebugmode=2: sshd during the install is not the end.
        assert!(going(m.observe(&seen("sshd", "installing", INSTALL))));
        assert!(m.install_seen());
        assert!(matches!(
            m.observe(&seen("noping", "installing", "boot")),
            Verdict::Loaded(_)
        ));
    }

    #[test]
    fn booted_after_a_seen_install_is_the_end_too() {
        let mut m = Monitor::new(ImageKind::Diskful);
        m.observe(&seen("installing prep", "installing", INSTALL));
        // nodeset stat gave no answer; status says the new system booted.
        assert!(matches!(
            m.observe(&seen("sshd", "booted", "")),
            Verdict::Loaded(_)
        ));
    }

    #[test]
    fn booted_without_an_install_is_a_missed_network_boot() {
        let mut m = Monitor::new(ImageKind::Diskful);
        assert!(going(m.observe(&seen("noping", "powering-on", INSTALL))));
        assert!(matches!(
            m.observe(&seen("https,sshd", "booted", INSTALL)),
            Verdict::Missed(_)
        ));
        assert_eq!(m.up_without_install(), Some("https,sshd"));
    }

    #[test]
    fn diskless_ends_on_booted_after_netbooting() {
        let net = "netboot rhels8-x86_64-compute";
        let mut m = Monitor::new(ImageKind::Diskless);
        assert!(going(m.observe(&seen("sshd", "booted", net))));
        assert!(going(m.observe(&seen("noping", "powering-on", net))));
        assert!(going(m.observe(&seen(net, "netbooting", net))));
        assert!(matches!(
            m.observe(&seen("sshd", "booted", net)),
            Verdict::Loaded(_)
        ));
        assert_eq!(ImageKind::of_state(net), ImageKind::Diskless);
        assert_eq!(ImageKind::of_state("statelite x"), ImageKind::Diskless);
        assert_eq!(ImageKind::of_state(INSTALL), ImageKind::Diskful);
    }

    #[test]
    fn failed_status_fails() {
        let mut m = Monitor::new(ImageKind::Diskful);
        assert!(matches!(
            m.observe(&seen("noping", "failed", INSTALL)),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn a_look_without_an_answer_keeps_the_last_one() {
        let mut known = seen("installing prep", "installing", INSTALL);
        let before = known.line();
        known.merge(&seen("", "installing", ""));
        assert_eq!(known.line(), before);
        known.merge(&seen("installing bash (42%)", "", ""));
        assert_ne!(known.line(), before);
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
        let c = XcatConfig {
            power_tries: 0,
            ..XcatConfig::default()
        };
        assert!(c.validate().is_err());
        let c = XcatConfig {
            bin_dir: Some("/opt/xcat/bin".into()),
            ..XcatConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("xcat_root"));
    }

    #[test]
    fn commands_live_where_xcat_installs_them() {
        let c = XcatConfig {
            xcat_root: Some("/x".into()),
            lsdef: Some("/usr/local/bin/lsdef".into()),
            ..XcatConfig::default()
        };
        assert_eq!(c.command("nodeset"), PathBuf::from("/x/sbin/nodeset"));
        assert_eq!(c.command("rpower"), PathBuf::from("/x/bin/rpower"));
        assert_eq!(c.command("nodestat"), PathBuf::from("/x/bin/nodestat"));
        assert_eq!(c.command("lsdef"), PathBuf::from("/usr/local/bin/lsdef"));
    }

    #[test]
    fn slot_name_is_stable_per_management_node() {
        let a = XcatConfig {
            xcat_root: Some("/opt/xcat".into()),
            ..XcatConfig::default()
        };
        let same = XcatConfig {
            xcat_root: Some("/opt/xcat".into()),
            ..XcatConfig::default()
        };
        assert_eq!(a.slot_name(), same.slot_name());
        let b = XcatConfig {
            xcat_root: Some("/other".into()),
            ..XcatConfig::default()
        };
        assert_ne!(a.slot_name(), b.slot_name());
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
