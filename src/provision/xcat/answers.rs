//! xCAT's answers, read: pure functions over the text of its commands'
//! output, tested below.
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
//! - `rinstall` sets the next boot to the network before it powers a node
//!   (plugins/rinstall.pm), by the node's `mgt` (nodehm.mgt): `rsetboot
//!   NODE net` for ipmi and openbmc (and redfish, whose plugin handles
//!   rsetboot too: plugins/redfish.pm), read back as `NODE: Network`
//!   (plugins/ipmi.pm setboot_gotstat; hwctl/redfish_client.py
//!   get_boot_state); `rnetboot NODE` for the POWER hmc, fsp and ivm, which
//!   boots the node from the network itself and answers `NODE: Success`
//!   (xCAT/PPCboot.pm), instead of rpower; nothing for kvm, esx, blade or
//!   rhevm. A command no plugin of the node's mgt handles is `Unable to
//!   identify plugin for this command` (sbin/xcatd).
//! - `chdef -t node -o NODE ATTR=VALUE` creates nodes it does not know and
//!   needs `groups` for that: for an unknown node it says `Attribute
//!   'groups' is not specified for node 'NODE'` (plugins/DBobjectdefs.pm).
//!   `nodeset NODE install` builds the state from the nodetype attributes
//!   up to xCAT 2.13.7; 2.13.8 and later refuse it (`The options
//!   "install", "netboot", and "statelite" have been deprecated`,
//!   destiny.pm).

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

/// A boot state `nodeset` sets (destiny.pm), which nodestat echoes for a
/// node that pings with no known port open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destiny {
    Install,
    Netboot,
    Statelite,
    Boot,
    Image,
    Shell,
    Standby,
    Runcmd,
    Runimage,
    Offline,
    Discover,
    Iscsiboot,
}

impl Destiny {
    /// Every state and its name.
    const NAMES: [(Destiny, &'static str); 12] = [
        (Destiny::Install, "install"),
        (Destiny::Netboot, "netboot"),
        (Destiny::Statelite, "statelite"),
        (Destiny::Boot, "boot"),
        (Destiny::Image, "image"),
        (Destiny::Shell, "shell"),
        (Destiny::Standby, "standby"),
        (Destiny::Runcmd, "runcmd"),
        (Destiny::Runimage, "runimage"),
        (Destiny::Offline, "offline"),
        (Destiny::Discover, "discover"),
        (Destiny::Iscsiboot, "iscsiboot"),
    ];

    /// The state a value starts with (`install rhels7-x86_64-compute`);
    /// `None` when it is no nodeset state.
    pub fn of(value: &str) -> Option<Destiny> {
        let word = status_word(value);
        Destiny::NAMES
            .iter()
            .find(|(_, n)| *n == word)
            .map(|(d, _)| *d)
    }

    /// Its name, as nodeset prints it.
    pub fn name(self) -> &'static str {
        Destiny::NAMES
            .iter()
            .find(|(d, _)| *d == self)
            .map_or("", |(_, n)| n)
    }
}

/// A node's `status` attribute, as xCAT's scripts set it (the notes at the
/// top say where each is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `powering-on`: rpower turned it on.
    PoweringOn,
    /// `installing`: the installer's %pre ran.
    Installing,
    /// `postbooting`: the first boot runs the postscripts.
    Postbooting,
    /// `netbooting`: a diskless image is booting.
    Netbooting,
    /// `booted`: a system came up (on every boot, not only the first).
    Booted,
    /// `failed`: a postscript failed.
    Failed,
    /// Anything else.
    Other,
}

impl Status {
    /// The status a value starts with; `None` when it has no word.
    pub fn of(value: &str) -> Option<Status> {
        Some(match status_word(value).as_str() {
            "" => return None,
            "powering-on" => Status::PoweringOn,
            "installing" => Status::Installing,
            "postbooting" => Status::Postbooting,
            "netbooting" => Status::Netbooting,
            "booted" => Status::Booted,
            "failed" => Status::Failed,
            _ => Status::Other,
        })
    }
}

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
    if Destiny::of(&word).is_some() {
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

/// What `rpower NODE stat` prints, lower-case, and the state it means
/// (ipmi.pm; an HMC's words in PPCpower.pm); the first word of a state is
/// its name.
const POWER_WORDS: [(&str, Power); 6] = [
    ("on", Power::On),
    ("off", Power::Off),
    ("running", Power::On),
    ("operating", Power::On),
    ("open firmware", Power::On),
    ("not activated", Power::Off),
];

/// Parses the value of `rpower NODE stat`.
pub fn parse_power(value: &str) -> Power {
    let v = value.trim().to_ascii_lowercase();
    POWER_WORDS
        .iter()
        .find(|(w, _)| *w == v)
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| Power::Other(value.trim().to_string()))
}

impl Power {
    /// The state in words: `on`, `off`, or what was printed.
    pub fn name(&self) -> &str {
        match self {
            Power::Other(s) => s,
            p => POWER_WORDS
                .iter()
                .find(|(_, q)| q == p)
                .map_or("", |(w, _)| w),
        }
    }
}

/// The `status` attribute from `lsdef -t node -o NODE -i status`:
/// `Object name: NODE` then indented `status=VALUE`. `None` when the node
/// has no status yet.
pub fn lsdef_status(text: &str, node: &str) -> Option<String> {
    lsdef_attr(text, node, "status")
}

/// Attribute `attr` of `node` from `lsdef -t node -o NODE -i ATTR`;
/// `None` when it is not set.
pub fn lsdef_attr(text: &str, node: &str, attr: &str) -> Option<String> {
    let mut in_node = !text.contains("Object name:");
    for l in lines(text) {
        if let Some(name) = l.strip_prefix("Object name:") {
            in_node = name.trim() == node;
            continue;
        }
        if in_node && let Some(v) = l.strip_prefix(attr).and_then(|r| r.strip_prefix('=')) {
            let v = v.trim();
            return (!v.is_empty()).then(|| v.to_string());
        }
    }
    None
}

/// How a node's next boot is set to the network, by its `mgt`
/// (rinstall.pm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetBoot {
    /// `rsetboot NODE net`, then `rpower NODE boot` (ipmi, openbmc,
    /// redfish).
    Rsetboot,
    /// `rnetboot NODE`, which boots the node from the network itself
    /// (hmc, fsp, ivm: POWER).
    Rnetboot,
    /// No command: the node must boot from the network by itself (kvm,
    /// esx, blade, rhevm, ...).
    Nothing,
}

/// Each mgt with a command that sets the next boot, and the command.
const NET_BOOT: [(&str, NetBoot); 6] = [
    ("ipmi", NetBoot::Rsetboot),
    ("openbmc", NetBoot::Rsetboot),
    ("redfish", NetBoot::Rsetboot),
    ("hmc", NetBoot::Rnetboot),
    ("fsp", NetBoot::Rnetboot),
    ("ivm", NetBoot::Rnetboot),
];

impl NetBoot {
    /// The way for a node whose mgt is `mgt`.
    pub fn of_mgt(mgt: &str) -> NetBoot {
        let m = mgt.trim().to_ascii_lowercase();
        NET_BOOT
            .iter()
            .find(|(n, _)| *n == m)
            .map_or(NetBoot::Nothing, |(_, w)| *w)
    }

    /// The mgt values that have this way, for messages.
    pub fn mgts(self) -> String {
        NET_BOOT
            .iter()
            .filter(|(_, w)| *w == self)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// True when xCAT found no plugin of the node's mgt for the command.
pub fn no_plugin(text: &str) -> bool {
    text.to_ascii_lowercase()
        .contains("unable to identify plugin for this command")
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
    /// This xCAT no longer takes the request (nodeset by nodetype
    /// attributes, 2.13.8 and later): loading again cannot help.
    Refused(String),
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
            | XcatError::Refused(s)
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
    if low.contains("invalid nodes and/or groups in noderange")
        || low.contains("of type 'node'")
        || low.contains("attribute 'groups' is not specified for node")
    {
        return Some(XcatError::UnknownNode(err));
    }
    if low.contains("have been deprecated, use \"osimage=") {
        return Some(XcatError::Refused(err));
    }
    let definition = [
        "no mac address",
        "unable to identify plugin",
        "kernel cannot be found",
        "did you run \"genimage\"",
        "nodetype.os not defined",
        "nodetype.arch not defined",
        "nodetype.profile not defined",
        "is not a valid attribute name",
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
        match Destiny::of(state) {
            Some(Destiny::Netboot | Destiny::Statelite) => ImageKind::Diskless,
            _ => ImageKind::Diskful,
        }
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
        assert_eq!(parse_power("Running").name(), "on");
        assert_eq!(parse_power("Not Activated").name(), "off");
        assert_eq!(parse_power("Starting").name(), "Starting");
    }

    #[test]
    fn nodeset_states_and_statuses_by_name() {
        for (d, n) in Destiny::NAMES {
            assert_eq!(Destiny::of(n), Some(d));
            assert_eq!(d.name(), n);
        }
        assert_eq!(
            Destiny::of("install rhels7-x86_64-compute"),
            Some(Destiny::Install)
        );
        assert_eq!(Destiny::of("installing prep"), None);
        assert_eq!(Status::of("booted"), Some(Status::Booted));
        assert_eq!(Status::of("powering-on"), Some(Status::PoweringOn));
        assert_eq!(Status::of("alive"), Some(Status::Other));
        assert_eq!(Status::of(" "), None);
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
        let e = find_error(
            "Error: [mgmt]: Attribute 'groups' is not specified for node 'node9', skipping to the next node.\nNo object definitions have been created or modified.\n",
        );
        assert!(matches!(e, Some(XcatError::UnknownNode(_))), "{e:?}");
        let e = find_error(
            "Error: [mgmt]: The options \"install\", \"netboot\", and \"statelite\" have been deprecated, use \"osimage=<osimage_name>\" instead.\n",
        );
        assert!(matches!(e, Some(XcatError::Refused(_))), "{e:?}");
        let e = find_error(
            "Error: [mgmt]: 'flavour' is not a valid attribute name for an object type of 'node'.\n",
        );
        assert!(matches!(e, Some(XcatError::Definition(_))), "{e:?}");
    }

    #[test]
    fn the_way_to_the_network_by_mgt() {
        for m in ["ipmi", "openbmc", "redfish", "IPMI"] {
            assert_eq!(NetBoot::of_mgt(m), NetBoot::Rsetboot, "{m}");
        }
        for m in ["hmc", "fsp", "ivm"] {
            assert_eq!(NetBoot::of_mgt(m), NetBoot::Rnetboot, "{m}");
        }
        for m in ["kvm", "esx", "blade", "rhevm", ""] {
            assert_eq!(NetBoot::of_mgt(m), NetBoot::Nothing, "{m}");
        }
        assert_eq!(NetBoot::Rnetboot.mgts(), "hmc, fsp, ivm");
        assert!(no_plugin(
            "node1: [mgmt]: Error: Unable to identify plugin for this command, check relevant tables: nodehm.mgt"
        ));
        let t = "Object name: node1\n    mgt=ipmi\n    mgtx=no\n";
        assert_eq!(lsdef_attr(t, "node1", "mgt").as_deref(), Some("ipmi"));
        assert_eq!(
            lsdef_attr("Object name: node1\n    mgt=\n", "node1", "mgt"),
            None
        );
    }
}
