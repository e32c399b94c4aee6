//! `[provisioners.NAME] kind = "xcat"`: the keys, their defaults and
//! checks, where the xCAT commands are, and what `reimage check` says.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use super::target::Target;
use crate::config::Plan;
use crate::duration;
use crate::provision::config_name;

/// The shortest `reload_time` accepted: an xCAT install of a real machine
/// (PXE, installer, package installation, reboot) never takes less.
pub const MIN_RELOAD_TIME: Duration = Duration::from_secs(10 * 60);

/// The xCAT root when neither `xcat_root` nor `$XCATROOT` says otherwise.
pub const DEFAULT_XCAT_ROOT: &str = "/opt/xcat";

/// Whether a load sets the node's next boot to the network before it
/// powers the node, as xCAT's `rinstall` does.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SetBoot {
    /// `rsetboot NODE net` (ipmi, openbmc, redfish) or `rnetboot NODE`
    /// (hmc, fsp, ivm) before every install power action.
    #[default]
    Net,
    /// Nothing: the node boots from the network first by itself (its
    /// firmware's fixed boot order).
    None,
}

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
    /// The `rsetboot` command. Default: `XCAT_ROOT/bin/rsetboot`.
    #[serde(default)]
    pub rsetboot: Option<PathBuf>,
    /// The `rnetboot` command. Default: `XCAT_ROOT/bin/rnetboot`.
    #[serde(default)]
    pub rnetboot: Option<PathBuf>,
    /// The `chdef` command. Default: `XCAT_ROOT/bin/chdef`.
    #[serde(default)]
    pub chdef: Option<PathBuf>,
    /// `net`: set the next boot to the network before every install power
    /// action; `none`: leave the boot order to the node.
    #[serde(default)]
    pub set_boot: SetBoot,
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
            rsetboot: None,
            rnetboot: None,
            chdef: None,
            set_boot: SetBoot::Net,
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

/// The xCAT commands reimage runs.
const COMMANDS: [&str; 7] = [
    "nodeset", "rpower", "nodestat", "lsdef", "rsetboot", "rnetboot", "chdef",
];

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
            ("rsetboot", &self.rsetboot),
            ("rnetboot", &self.rnetboot),
            ("chdef", &self.chdef),
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
            "rsetboot" => &self.rsetboot,
            "rnetboot" => &self.rnetboot,
            "chdef" => &self.chdef,
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
    pub(super) fn xcatd(&self) -> String {
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
                "xCAT node: {}, {}",
                plan.computer.node,
                match Target::parse(&plan.image.source) {
                    Ok(Target::Osimage(o)) => format!("osimage: {o}"),
                    Ok(t) => format!(
                        "image: {} (xCAT up to 2.13.7; 2.13.8 and later load osimages only)",
                        t.words()
                    ),
                    Err(e) => format!("source: {e}"),
                }
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
            self.set_boot_line(),
            format!(
                "status polled every {} at most",
                duration::fmt(self.poll_interval)
            ),
        ]
    }

    /// What `set_boot` does, in words.
    fn set_boot_line(&self) -> String {
        match self.set_boot {
            SetBoot::Net => format!(
                "next boot: set_boot = \"{}\": before each power try, `rsetboot NODE net` (mgt ipmi, openbmc, redfish; checked for `NODE: Network`) or `rnetboot NODE` instead of rpower (mgt hmc, fsp, ivm), by the node's mgt read at load; other mgt: a warning, the node must boot from the network by itself",
                config_name(&self.set_boot)
            ),
            SetBoot::None => format!(
                "next boot: set_boot = \"{}\": not set; the node must boot from the network first by itself (a UEFI node puts its installed system first after an install)",
                config_name(&self.set_boot)
            ),
        }
    }

    /// The semaphore name: one per management node, i.e. per xcatd address
    /// and nodeset command, so two provisioner tables that reach the same
    /// xCAT share the limit.
    pub(super) fn slot_name(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.command("rsetboot"), PathBuf::from("/x/bin/rsetboot"));
        assert_eq!(c.command("rnetboot"), PathBuf::from("/x/bin/rnetboot"));
        assert_eq!(c.command("chdef"), PathBuf::from("/x/bin/chdef"));
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
