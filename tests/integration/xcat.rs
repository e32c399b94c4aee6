//! The `xcat` provisioner against a stand-in xCAT (no real xCAT runs here):
//! tests/standins/xcat/xcatclient, written from xCAT's own code and Apache
//! VCL's xCAT module (its header lists each fact and the upstream file it
//! comes from). Each test installs it as an xCAT root of its own, bin/ and
//! sbin/ as a stock xCAT has them, with a stand-in xCAT directory
//! ($XCAT_STANDIN_DIR) holding the nodes, osimages and how the hardware
//! behaves.

use crate::common::{self, Scratch, of_kind, repo};
use crate::test::{Output, Test};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use testbed::port;
use testbed::xcat::Xcat;

/// A diskful osimage and what `nodeset osimage=` makes of it.
const IMAGE: &str = "rhels7.9-x86_64-install-compute";
const INSTALL: &str = "install rhels7.9-x86_64-compute";
/// A diskless osimage.
const DISKLESS: &str = "rhels8.6-x86_64-netboot-compute";
/// An image named by nodetype attributes, as VCL's xCAT.pm loads one.
const NODETYPE: &str = "os=rhels8.6,arch=x86_64,profile=compute";

/// A stand-in xCAT with its nodes, and a config using it.
struct Cluster {
    s: Scratch,
    x: Xcat,
}

impl Cluster {
    /// Nodes `nodes` (each with a MAC, `booted` on its old system and
    /// powered on), the stand-in as an xCAT root, `behaviour` for every
    /// node, and `[provisioners.x]` with `extra` keys.
    fn new(name: &str, nodes: &[&str], behaviour: &str, extra: &str) -> Cluster {
        let s = Scratch::new(name);
        let x = Xcat::install(&s.dir);
        for n in nodes {
            x.node(n);
        }
        x.osimage(IMAGE, "install rhels7.9 x86_64 compute");
        x.osimage(DISKLESS, "netboot rhels8.6 x86_64 compute");
        x.behaviour(behaviour);
        let mut computers = String::new();
        for n in nodes.iter().chain(["ghost"].iter()) {
            computers.push_str(&format!(
                "[computers.{n}]\naddress = \"127.0.0.1\"\nnode = \"{n}\"\n"
            ));
        }
        s.config(&format!(
            r#"
[provisioners.x]
kind = "xcat"
reload_time = "10m"
overall_timeout = "30s"
poll_interval = "100ms"
{extra}

[os.none]
family = "generic"
channel = "none"
steps = []

[images.rhel]
os = "none"
provisioner = "x"
source = "{IMAGE}"

[images.diskless]
os = "none"
provisioner = "x"
source = "{DISKLESS}"

[images.missing]
os = "none"
provisioner = "x"
source = "no-such-osimage"

[images.nodetype]
os = "none"
provisioner = "x"
source = "{NODETYPE}"

[images.nodetype-diskless]
os = "none"
provisioner = "x"
source = "{NODETYPE},provmethod=netboot"

{computers}"#
        ));
        Cluster { s, x }
    }

    fn root(&self) -> PathBuf {
        self.x.root.clone()
    }

    fn dir(&self) -> PathBuf {
        self.x.dir.clone()
    }

    /// A run with the stand-in as the xCAT root ($XCATROOT, as xCAT's own
    /// profile sets it).
    fn test(&self) -> Test<'_> {
        let [(k1, v1), (k2, v2)] = self.x.env();
        Test::with(&self.s)
            .env(k1, v1)
            .env(k2, v2)
            .limit(Duration::from_secs(60))
    }

    fn load(&self, computer: &str, image: &str) -> Output {
        self.test().load(computer, image).run()
    }

    /// Runs a stand-in xCAT command as an admin would (rinstall is nodeset
    /// and rpower).
    fn admin(&self, cmd: &str, args: &[&str]) {
        let out = Command::new(self.root().join(cmd))
            .args(args)
            .envs(self.x.env())
            .output()
            .expect("run stand-in");
        assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
    }

    fn calls(&self) -> String {
        self.x.calls()
    }

    fn log(&self) -> String {
        self.x.log()
    }

    fn node(&self, node: &str, file: &str) -> String {
        self.x.node_file(node, file)
    }

    /// Replaces `from` with `to` in the config.
    fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.s.path("reimage.toml")).expect("config");
        assert!(text.contains(from), "{from:?} not in the config");
        self.s.write("reimage.toml", &text.replacen(from, to, 1));
    }

    /// The stand-in's calls of `prog` (without the node's other calls),
    /// in order.
    fn calls_of(&self, progs: &[&str]) -> Vec<String> {
        self.calls()
            .lines()
            .filter(|l| progs.iter().any(|p| l.split(' ').next() == Some(*p)))
            .filter(|l| !l.ends_with(" stat") && !l.contains(" -i "))
            .map(String::from)
            .collect()
    }

    fn messages(&self, computer: &str, kind: &str) -> Vec<String> {
        of_kind(&self.s.events(computer), kind)
            .iter()
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect()
    }
}

// --- 1. The commands of a stock xCAT -----------------------------------------

#[test]
fn a_stock_xcat_root_runs_nodeset_from_sbin_and_the_rest_from_bin() {
    let c = Cluster::new("xcat-root", &["node1"], "", "");
    let r = c.load("node1", "rhel");
    r.code(0);
    let outputs = c.messages("node1", "output").join("\n");
    let root = c.root().display().to_string();
    for cmd in [
        format!("{root}/sbin/nodeset node1 osimage={IMAGE}"),
        format!("{root}/bin/rpower node1 boot"),
        format!("{root}/bin/nodestat node1"),
        format!("{root}/bin/lsdef -t node -o node1 -i status"),
    ] {
        assert!(outputs.contains(&cmd), "{cmd} not run: {outputs}");
    }
}

#[test]
fn xcat_root_and_a_per_command_path_can_be_set() {
    let c = Cluster::new("xcat-root-key", &["node1"], "", "");
    // A nodestat wrapper elsewhere, as a site might have.
    let wrapper = c.s.script(
        "site-bin/nodestat",
        &format!(
            "#!/bin/sh\necho wrapped >>\"$XCAT_STANDIN_DIR/wrapper\"\nexec {}/bin/nodestat \"$@\"\n",
            c.root().display()
        ),
    );
    let text = std::fs::read_to_string(c.s.path("reimage.toml")).expect("config");
    c.s.write(
        "reimage.toml",
        &text.replace(
            "kind = \"xcat\"\n",
            &format!(
                "kind = \"xcat\"\nxcat_root = \"{}\"\nnodestat = \"{}\"\n",
                c.root().display(),
                wrapper.display()
            ),
        ),
    );
    let r = c
        .test()
        .env("XCATROOT", "/nonexistent")
        .load("node1", "rhel")
        .run();
    r.code(0);
    let wrapped = std::fs::read_to_string(c.dir().join("wrapper")).unwrap_or_default();
    assert!(wrapped.contains("wrapped"), "nodestat override not used");
}

#[test]
fn bin_dir_is_a_config_error_that_says_what_to_set() {
    let c = Cluster::new("xcat-bindir", &["node1"], "", "bin_dir = \"/opt/xcat/bin\"");
    let r = c.load("node1", "rhel");
    r.code(78);
    assert!(r.stderr.contains("xcat_root"), "{}", r.stderr);
    assert!(r.stderr.contains("sbin"), "{}", r.stderr);
    assert!(!c.calls().contains("nodeset"), "{}", c.calls());
}

// --- 2. Done on evidence that the install ran and ended ---------------------

#[test]
fn a_normal_install_follows_xcats_status_sequence_and_ends_at_nodeset_boot() {
    let c = Cluster::new("xcat-normal", &["node1"], "", "stall_timeout = \"5s\"");
    let r = c.load("node1", "rhel");
    r.code(0);
    // The install really ended (the installer asked for `next`) before
    // reimage said it was loaded.
    assert!(c.log().contains("next node1"), "{}", c.log());
    let progress = c.messages("node1", "progress").join("\n");
    for want in [
        "status: powering-on",
        "nodestat: installing prep · status: installing",
        &format!("nodeset: {INSTALL}"),
    ] {
        assert!(progress.contains(want), "missing {want:?}: {progress}");
    }
    let ends = c.messages("node1", "step-end").join("\n");
    assert!(ends.contains("was on: reset"), "{ends}");
    assert!(ends.contains("nodeset: boot"), "{ends}");
    assert!(ends.contains("installs to disk"), "{ends}");
}

#[test]
fn a_pxe_miss_is_a_retry_that_says_the_network_boot_did_not_happen() {
    // The node boots its old system (installed by xCAT, so it reports
    // `booted` on every boot) instead of the installer.
    let c = Cluster::new(
        "xcat-pxemiss",
        &["node1"],
        "pxe=miss\napps=https,sshd\n",
        "",
    );
    let r = c.load("node1", "rhel");
    r.code(75);
    assert!(
        r.stderr.contains("the network boot did not happen"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("makedhcp -q node1"), "{}", r.stderr);
    assert!(!c.log().contains("next node1"), "{}", c.log());
}

#[test]
fn a_pxe_miss_onto_a_system_xcat_did_not_install_stalls_with_a_hint() {
    // This old system reports nothing to xCAT: only nodestat sees it, with
    // two applications open.
    let c = Cluster::new(
        "xcat-pxemiss-other",
        &["node1"],
        "pxe=miss\noldos=other\napps=sshd,https\n",
        // The boot phases move on reimage's looks (two of them here), so
        // the node soon sits on its old system and nothing changes.
        "stall_timeout = \"6s\"",
    );
    let r = c.load("node1", "rhel");
    r.code(75);
    assert!(r.stderr.contains("no change for 6s"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("answered on https,sshd: the network boot probably did not happen"),
        "{}",
        r.stderr
    );
}

#[test]
fn with_xcatdebugmode_2_sshd_during_the_install_is_not_the_end() {
    let c = Cluster::new("xcat-debugmode", &["node1"], "", "");
    c.s.write("xcat/site/xcatdebugmode", "2\n");
    let r = c.load("node1", "rhel");
    r.code(0);
    let progress = c.messages("node1", "progress").join("\n");
    assert!(
        progress.contains("nodestat: sshd · status: installing"),
        "the installer's sshd was not seen: {progress}"
    );
    assert!(c.log().contains("next node1"), "ended early: {}", c.log());
}

#[test]
fn a_diskless_image_is_loaded_when_it_has_booted_after_netbooting() {
    let c = Cluster::new("xcat-diskless", &["node1"], "", "");
    let r = c.load("node1", "diskless");
    r.code(0);
    let ends = c.messages("node1", "step-end").join("\n");
    assert!(ends.contains("(diskless)"), "{ends}");
    assert!(ends.contains("status: booted"), "{ends}");
    assert!(c.log().contains("booted node1"), "{}", c.log());
    let progress = c.messages("node1", "progress").join("\n");
    assert!(progress.contains("status: netbooting"), "{progress}");
}

// --- 3. A power reset that works from off, with the real numbers --------------

#[test]
fn a_power_reset_powers_on_a_node_that_is_off_and_the_message_has_real_numbers() {
    // The node powers itself off at the end of the install; the OS never
    // answers, so the profile resets power after 1s and waits 1s more.
    let closed = port::closed();
    let c = Cluster::new(
        "xcat-reset-off",
        &["node1"],
        "poweroff=1\n",
        "stall_timeout = \"5s\"",
    );
    let text = std::fs::read_to_string(c.s.path("reimage.toml")).expect("config");
    c.s.write(
        "reimage.toml",
        &text.replace(
            "steps = []",
            &format!(
                "steps = [{{ wait = \"port\", port = {closed}, timeout = \"1s\", reset_on_timeout = \"1s\" }}]"
            ),
        ),
    );
    let r = c
        .test()
        .provision("node1", "rhel")
        .args(&["--attempts", "1"])
        .run();
    r.code(1);
    assert_eq!(c.node("node1", "power"), "on", "{}", c.calls());
    let ends = c.messages("node1", "step-end").join("\n");
    assert!(ends.contains("was off: powered on"), "{ends}");
    assert!(
        r.stderr
            .contains("(reset power after 1s, then waited 1s more)"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("step `port`: not ready after 1s"),
        "{}",
        r.stderr
    );
}

// --- 4. Power commands are retried inside the attempt ------------------------

#[test]
fn a_bmc_that_times_out_once_costs_no_reload() {
    let c = Cluster::new("xcat-bmc-once", &["node1"], "bmc_timeouts=1\n", "");
    let r = c.load("node1", "rhel");
    r.code(0);
    assert_eq!(
        c.calls().matches("rpower node1 boot").count(),
        2,
        "{}",
        c.calls()
    );
    let progress = c.messages("node1", "progress").join("\n");
    assert!(progress.contains("try 2 of 3"), "{progress}");
    assert!(progress.contains("Error: timeout"), "{progress}");
}

#[test]
fn a_bmc_that_never_answers_is_a_retry_after_power_tries() {
    let c = Cluster::new(
        "xcat-bmc-dead",
        &["node1"],
        "bmc_timeouts=99\n",
        "power_tries = 2",
    );
    let r = c.load("node1", "rhel");
    r.code(75);
    assert_eq!(
        c.calls().matches("rpower node1 boot").count(),
        2,
        "{}",
        c.calls()
    );
    assert!(
        r.stderr
            .contains("power is not on after 2 tries of `rpower node1 boot`"),
        "{}",
        r.stderr
    );
}

// --- 5. Only a real change restarts the stall timer ---------------------------

#[test]
fn a_flapping_status_stalls_instead_of_running_to_the_overall_timeout() {
    // The installer hangs; every other nodestat hangs too and is killed.
    // The command timeout leaves every answering command (tens of ms) room
    // on a loaded machine; the stall spans a few flaps.
    let c = Cluster::new(
        "xcat-flap",
        &["node1"],
        "hang=1\nflap=1\n",
        "stall_timeout = \"6s\"\ncommand_timeout = \"2s\"",
    );
    let r = c.load("node1", "rhel");
    r.code(75);
    assert!(r.stderr.contains("no change for 6s"), "{}", r.stderr);
    assert!(!r.stderr.contains("not ready after 30s"), "{}", r.stderr);
    let progress = c.messages("node1", "progress").join("\n");
    assert!(progress.contains("nodestat: no answer"), "{progress}");
}

#[test]
fn a_stalled_install_asks_for_a_retry_and_the_last_attempt_is_fatal() {
    let c = Cluster::new(
        "xcat-stall",
        &["node1"],
        "hang=1\n",
        "stall_timeout = \"1s\"",
    );
    let r = c.load("node1", "rhel");
    r.code(75);
    assert!(r.stderr.contains("no change for 1s"), "{}", r.stderr);
    assert!(r.stderr.contains("nodestat node1"), "{}", r.stderr);
    let r = c.test().load("node1", "rhel").attempt(2, 2).run();
    r.code(1);
    assert!(r.stderr.contains("no attempts left"), "{}", r.stderr);
}

// --- 6. The limit counts what xCAT itself runs -------------------------------

#[test]
fn installs_started_outside_reimage_count_toward_the_limit() {
    let c = Cluster::new(
        "xcat-outside",
        &["node1", "other1", "other2"],
        "",
        "max_concurrent_loads = 2\nslot_wait = \"1s\"",
    );
    // An admin's `rinstall` of two nodes whose installs hang.
    for n in ["other1", "other2"] {
        c.s.write(&format!("xcat/nodes/{n}/behaviour"), "hang=1\n");
        c.admin("sbin/nodeset", &[n, &format!("osimage={IMAGE}")]);
        c.admin("bin/rpower", &[n, "boot"]);
    }
    let r = c.load("node1", "rhel");
    r.code(75);
    assert!(
        r.stderr
            .contains("2 busy, started outside reimage: other1, other2"),
        "{}",
        r.stderr
    );
    assert!(
        !c.calls().contains("nodeset node1 osimage"),
        "loaded past the limit: {}",
        c.calls()
    );
    // The morning's view (issue 24) names the nodes that hold the slots
    // with no reimage run behind them, and how to free them; node1's run
    // asked for a retry: exit 1.
    let r = c.test().args(&["status"]).run();
    r.code(1)
        .stdout_has("LOAD SLOTS")
        .stdout_has("provisioner `x` (xcatd at ")
        .stdout_has(": 2 of 2 in use")
        .stdout_has(
            "  other1: in install state, with no reimage run: `nodeset other1 boot` frees its slot",
        )
        .stdout_has(
            "  other2: in install state, with no reimage run: `nodeset other2 boot` frees its slot",
        )
        .stdout_lacks("node1: in install state");
    // With room for three, it loads, and says what it counted.
    let text = std::fs::read_to_string(c.s.path("reimage.toml")).expect("config");
    c.s.write(
        "reimage.toml",
        &text.replace("max_concurrent_loads = 2", "max_concurrent_loads = 3"),
    );
    let r = c.load("node1", "rhel");
    r.code(0);
    let ends = c.messages("node1", "step-end").join("\n");
    assert!(
        ends.contains("load slot 3 of 3 (2 busy, started outside reimage: other1, other2"),
        "{ends}"
    );
}

/// Eleven loads through one management node with max_concurrent_loads =
/// 10: ten install at once, the eleventh waits for a slot and then loads.
#[test]
fn eleven_loads_share_ten_slots() {
    let nodes: Vec<String> = (1..=11).map(|i| format!("n{i:02}")).collect();
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    // The installs are held until ten run and the eleventh waits for a
    // slot, however long eleven runs take to get there on a loaded machine.
    let c = Cluster::new(
        "xcat-eleven",
        &names,
        "hold=1\n",
        "max_concurrent_loads = 10",
    );
    c.s.write("xcat/hold", "");
    let text = std::fs::read_to_string(c.s.path("reimage.toml")).expect("config");
    c.s.write(
        "reimage.toml",
        &text
            .replace("poll_interval = \"100ms\"", "poll_interval = \"300ms\"")
            .replace("overall_timeout = \"30s\"", "overall_timeout = \"2m\""),
    );
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            c.test()
                .load(n, "rhel")
                .command()
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn reimage")
        })
        .collect();
    let held = common::eventually(Duration::from_secs(60), || {
        c.log().lines().filter(|l| l.starts_with("start ")).count() == 10
            && names.iter().any(|n| {
                c.s.events_so_far(n).iter().any(|e| {
                    e["kind"] == "progress"
                        && e["message"]
                            .as_str()
                            .unwrap_or("")
                            .contains("waiting for a load slot")
                })
            })
    });
    std::fs::remove_file(c.s.path("xcat/hold")).expect("let the installs end");
    assert!(held, "ten installs and one waiting never came: {}", c.log());
    for (n, child) in names.iter().zip(children) {
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The stand-in logs each install set up and each one ended, in the
    // order they happened: the line number orders them.
    let log = c.log();
    let mut start = BTreeMap::new();
    let mut done = BTreeMap::new();
    let (mut now, mut most) = (0, 0);
    for (t, l) in log.lines().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f[0] {
            "start" => {
                start.insert(f[1].to_string(), t);
                now += 1;
            }
            "next" => {
                done.insert(f[1].to_string(), t);
                now -= 1;
            }
            _ => {}
        }
        most = most.max(now);
    }
    assert_eq!((start.len(), done.len()), (11, 11), "{log}");
    assert_eq!(most, 10, "installs at once: {log}");
    let (last, last_start) = start
        .iter()
        .max_by_key(|(_, t)| **t)
        .map(|(n, t)| (n.clone(), *t))
        .expect("starts");
    let first_done = done.values().min().copied().expect("dones");
    assert!(last_start >= first_done, "{last} started early: {log}");
    let waited = c.messages(&last, "progress").join("\n");
    assert!(
        waited.contains("waiting for a load slot"),
        "{last}: {waited}"
    );
}

// --- What xCAT refuses ----------------------------------------------------------

#[test]
fn xcatd_down_is_a_retry_that_says_so() {
    let c = Cluster::new("xcat-down", &["node1"], "", "");
    c.s.write("xcat/xcatd-down", "");
    let r = c.load("node1", "rhel");
    r.code(75);
    assert!(r.stderr.contains("xcatd does not answer"), "{}", r.stderr);
    assert!(r.stderr.contains("systemctl status xcatd"), "{}", r.stderr);
}

#[test]
fn an_unknown_osimage_is_fatal() {
    let c = Cluster::new("xcat-noimage", &["node1"], "", "");
    let r = c.load("node1", "missing");
    r.code(1);
    assert!(
        r.stderr
            .contains("Cannot find the OS image no-such-osimage"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("lsdef -t osimage"), "{}", r.stderr);
    assert!(!c.calls().contains("rpower"), "{}", c.calls());
}

#[test]
fn a_node_without_a_mac_is_fatal() {
    let c = Cluster::new("xcat-nomac", &["node1"], "", "");
    std::fs::remove_file(c.dir().join("nodes/node1/mac")).expect("rm mac");
    let r = c.load("node1", "rhel");
    r.code(1);
    assert!(
        r.stderr.contains("No MAC address available for this node"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("lsdef node1"), "{}", r.stderr);
    assert!(!c.calls().contains("rpower"), "{}", c.calls());
}

#[test]
fn an_unknown_node_is_fatal_and_named() {
    let c = Cluster::new("xcat-ghost", &["node1"], "", "");
    let r = c.load("ghost", "rhel");
    r.code(1);
    assert!(
        r.stderr.contains("xCAT does not know node `ghost`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("lsdef -t node -o ghost"), "{}", r.stderr);
    assert!(!c.calls().contains("rpower"), "{}", c.calls());
}

#[test]
fn reload_time_under_ten_minutes_is_a_config_error() {
    let c = Cluster::new("xcat-short", &["node1"], "", "");
    let text = std::fs::read_to_string(c.s.path("reimage.toml")).expect("config");
    c.s.write(
        "reimage.toml",
        &text.replace("reload_time = \"10m\"", "reload_time = \"5m\""),
    );
    let r = c.load("node1", "rhel");
    r.code(78);
    assert!(r.stderr.contains("reload_time"), "{}", r.stderr);
}

#[test]
fn check_describes_the_load() {
    let c = Cluster::new("xcat-check", &["node1"], "", "stall_timeout = \"1m\"");
    let r = c.test().check("node1", "rhel").run();
    r.code(0);
    let text = format!("{}{}", r.stdout, r.stderr);
    let root = c.root().display().to_string();
    for want in [
        format!("{root}/sbin/nodeset, {root}/bin/rpower"),
        format!("osimage: {IMAGE}"),
        "stall timeout (no status change): 1m, 1m30s, 2m15s".into(),
        "at most 10, counting reimage's and the installs xCAT shows in `nodeset all stat`".into(),
        "up to 3 tries".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in {text}");
    }
}

// --- 7. UEFI: the next boot set to the network, as rinstall does ------------

#[test]
fn a_uefi_node_reloads_again_and_again_with_rsetboot_net() {
    // On UEFI the installer puts the installed system first in the boot
    // order: only a one-time override sends each reload to the network.
    let c = Cluster::new("xcat-uefi", &["node1"], "firmware=uefi\n", "");
    for _ in 0..3 {
        c.load("node1", "rhel").code(0);
        assert_eq!(c.node("node1", "bootorder"), "hd,net", "{}", c.log());
    }
    assert_eq!(
        c.calls_of(&["rsetboot", "rpower"]),
        ["rsetboot node1 net", "rpower node1 boot"].repeat(3),
        "rsetboot before every power action"
    );
    let log = c.log();
    assert_eq!(log.matches("next node1").count(), 3, "{log}");
    assert_eq!(log.matches("power node1 net").count(), 3, "{log}");
    assert!(!log.contains("power node1 hd"), "{log}");
    let ends = c.messages("node1", "step-end").join("\n");
    assert!(
        ends.contains("next boot from the network (`rsetboot node1 net`: Network); was on: reset"),
        "{ends}"
    );
}

#[test]
fn without_rsetboot_a_uefi_node_misses_its_second_network_boot() {
    let c = Cluster::new(
        "xcat-uefi-none",
        &["node1"],
        "firmware=uefi\n",
        "set_boot = \"none\"",
    );
    // The first load finds the firmware's network-first order...
    c.load("node1", "rhel").code(0);
    assert_eq!(c.node("node1", "bootorder"), "hd,net");
    // ...the second boots the system that install put first.
    let r = c.load("node1", "rhel");
    r.code(75);
    r.stderr_has("the network boot did not happen");
    r.stderr_has("nothing set its next boot (set_boot = \"none\")");
    r.stderr_has("set set_boot = \"net\" in provisioner `x`");
    assert!(!c.calls().contains("rsetboot"), "{}", c.calls());
    assert!(c.log().contains("power node1 hd"), "{}", c.log());
    assert_eq!(c.log().matches("next node1").count(), 1, "{}", c.log());
    // The same node with the next boot set: it installs again.
    c.edit("set_boot = \"none\"", "set_boot = \"net\"");
    c.load("node1", "rhel").code(0);
    assert_eq!(c.log().matches("next node1").count(), 2, "{}", c.log());
    assert!(c.calls().contains("rsetboot node1 net"), "{}", c.calls());
}

#[test]
fn set_boot_none_for_a_node_whose_firmware_boots_the_network_first() {
    let c = Cluster::new(
        "xcat-uefi-locked",
        &["node1"],
        "firmware=uefi\norder_locked=1\n",
        "set_boot = \"none\"",
    );
    for _ in 0..2 {
        c.load("node1", "rhel").code(0);
    }
    assert_eq!(c.log().matches("next node1").count(), 2, "{}", c.log());
    assert!(!c.calls().contains("rsetboot"), "{}", c.calls());
    assert!(
        !c.calls().contains("lsdef -t node -o node1 -i mgt"),
        "{}",
        c.calls()
    );
    let r = c.test().check("node1", "rhel").run();
    r.code(0);
    r.stdout_has("next boot: set_boot = \"none\": not set");
}

#[test]
fn an_rsetboot_that_times_out_is_tried_again_within_the_attempt() {
    let c = Cluster::new(
        "xcat-rsetboot-timeout",
        &["node1"],
        "firmware=uefi\nsetboot_timeouts=1\n",
        "",
    );
    // Installed before: its disk is first.
    c.x.write("nodes/node1/bootorder", "hd,net\n");
    c.load("node1", "rhel").code(0);
    assert_eq!(
        c.calls_of(&["rsetboot", "rpower"]),
        [
            "rsetboot node1 net",
            "rsetboot node1 net",
            "rpower node1 boot"
        ]
    );
    let progress = c.messages("node1", "progress").join("\n");
    assert!(progress.contains("try 2 of 3"), "{progress}");
    assert!(
        progress.contains("rsetboot node1 net` failed"),
        "{progress}"
    );
    assert!(c.log().contains("next node1"), "{}", c.log());
}

#[test]
fn a_power_node_boots_from_the_network_through_rnetboot() {
    let c = Cluster::new("xcat-rnetboot", &["node1"], "", "");
    c.x.write("nodes/node1/mgt", "hmc\n");
    c.x.write("nodes/node1/bootorder", "hd,net\n");
    c.load("node1", "rhel").code(0);
    // rnetboot instead of rpower, as rinstall does for hmc, fsp and ivm.
    assert_eq!(
        c.calls_of(&["rsetboot", "rnetboot", "rpower"]),
        ["rnetboot node1"]
    );
    let ends = c.messages("node1", "step-end").join("\n");
    assert!(
        ends.contains("booting from the network (`rnetboot node1`: Success)"),
        "{ends}"
    );
    assert!(c.log().contains("next node1"), "{}", c.log());
}

#[test]
fn a_mgt_without_a_next_boot_command_is_one_warning_not_an_error() {
    // A KVM guest node: xCAT has neither rsetboot nor rnetboot for it. Its
    // BMC (the hypervisor) times out once: two power tries, one warning.
    let c = Cluster::new("xcat-kvm", &["node1"], "bmc_timeouts=1\n", "");
    c.x.write("nodes/node1/mgt", "kvm\n");
    c.load("node1", "rhel").code(0);
    let warnings: Vec<String> = c
        .messages("node1", "warn")
        .into_iter()
        .filter(|m| m.contains("next boot"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("has mgt `kvm`"), "{warnings:?}");
    assert!(
        warnings[0].contains("set set_boot = \"none\""),
        "{warnings:?}"
    );
    assert_eq!(
        c.calls_of(&["rsetboot", "rnetboot", "rpower"]),
        ["rpower node1 boot", "rpower node1 boot"]
    );
}

#[test]
fn an_xcat_without_the_plugin_for_rsetboot_is_one_warning_too() {
    // The node says mgt=ipmi, but xCAT finds no plugin for rsetboot.
    let c = Cluster::new("xcat-noplugin", &["node1"], "", "");
    c.x.write("nodes/node1/mgt", "ipmi\n");
    let wrapper = c.s.script(
        "site-bin/rsetboot",
        "#!/bin/sh\necho \"$1: [mgmt]: Error: Unable to identify plugin for this command, check relevant tables: nodehm.mgt\" >&2\nexit 1\n",
    );
    c.edit(
        "kind = \"xcat\"\n",
        &format!("kind = \"xcat\"\nrsetboot = \"{}\"\n", wrapper.display()),
    );
    c.load("node1", "rhel").code(0);
    let warnings = c.messages("node1", "warn");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("xCAT has no `rsetboot` for node `node1`"),
        "{warnings:?}"
    );
}

#[test]
fn an_rsetboot_that_reads_back_another_device_never_powers_the_node() {
    // A BMC that takes the command but reads back the disk: the node would
    // boot its old system, so each try stops before rpower.
    let c = Cluster::new("xcat-rsetboot-hd", &["node1"], "firmware=uefi\n", "");
    c.x.write("nodes/node1/mgt", "ipmi\n");
    let wrapper = c.s.script(
        "site-bin/rsetboot",
        "#!/bin/sh\necho \"$1 $2\" >> \"$(dirname \"$0\")/rsetboot.log\"\necho \"$1: Hard Drive\"\n",
    );
    c.edit(
        "kind = \"xcat\"\n",
        &format!("kind = \"xcat\"\nrsetboot = \"{}\"\n", wrapper.display()),
    );
    let r = c.load("node1", "rhel");
    r.code(75);
    r.stderr_has("`rsetboot node1 net` answered `Hard Drive`, not `Network`");
    let asked =
        std::fs::read_to_string(wrapper.with_file_name("rsetboot.log")).expect("rsetboot ran");
    assert_eq!(
        asked.lines().count(),
        3,
        "one rsetboot per power try: {asked}"
    );
    assert!(asked.lines().all(|l| l == "node1 net"), "{asked}");
    assert!(c.calls_of(&["rpower"]).is_empty(), "{}", c.calls());
    assert!(!c.log().contains("power node1"), "{}", c.log());
}

// --- 8. Images named by nodetype attributes, as VCL loads them ---------------

#[test]
fn a_nodetype_image_sets_the_attributes_and_runs_nodeset_install() {
    let c = Cluster::new("xcat-nodetype", &["node1"], "", "");
    // The last xCAT that builds the boot state from nodetype.
    c.x.version("2.13.7");
    c.load("node1", "nodetype").code(0);
    for (attr, want) in [
        ("os", "rhels8.6"),
        ("arch", "x86_64"),
        ("profile", "compute"),
        ("provmethod", "install"),
        ("currstate", "boot"),
    ] {
        assert_eq!(c.node("node1", attr), want, "{attr}");
    }
    assert_eq!(
        c.calls_of(&["chdef", "nodeset", "rpower"])
            .into_iter()
            .filter(|l| !l.starts_with("nodeset all"))
            .collect::<Vec<_>>(),
        [
            "chdef -t node -o node1 os=rhels8.6 arch=x86_64 profile=compute",
            "nodeset node1 install",
            "rpower node1 boot"
        ]
    );
    let info = c.messages("node1", "info").join("\n");
    assert!(
        info.contains("loading nodetype os=rhels8.6, arch=x86_64, profile=compute (chdef, then `nodeset NODE install`) onto xCAT node `node1`"),
        "{info}"
    );
    let ends = c.messages("node1", "step-end").join("\n");
    assert!(
        ends.contains("install rhels8.6-x86_64-compute (installs to disk)"),
        "{ends}"
    );
    assert!(c.log().contains("next node1"), "{}", c.log());

    // provmethod=netboot: nodeset netboot, a diskless boot.
    c.load("node1", "nodetype-diskless").code(0);
    assert!(c.calls().contains("nodeset node1 netboot"), "{}", c.calls());
    let ends = c.messages("node1", "step-end").join("\n");
    assert!(
        ends.contains("netboot rhels8.6-x86_64-compute (diskless)"),
        "{ends}"
    );
}

#[test]
fn a_current_xcat_refuses_nodetype_images_and_says_what_to_set() {
    let c = Cluster::new("xcat-nodetype-new", &["node1"], "", "");
    let r = c.load("node1", "nodetype");
    r.code(1);
    r.stderr_has("have been deprecated");
    r.stderr_has("xCAT 2.13.8 and later take osimages only");
    r.stderr_has("lsdef -t osimage -w osvers==OS");
    assert!(!c.calls().contains("rpower"), "{}", c.calls());
    // An osimage still loads on it, and sets the nodetype attributes.
    c.load("node1", "rhel").code(0);
    assert_eq!(c.node("node1", "provmethod"), IMAGE);
    assert_eq!(c.node("node1", "os"), "rhels7.9");
}

#[test]
fn a_nodetype_image_of_an_unknown_node_is_fatal() {
    let c = Cluster::new("xcat-nodetype-ghost", &["node1"], "", "");
    c.x.version("2.13.7");
    let r = c.load("ghost", "nodetype");
    r.code(1);
    r.stderr_has("xCAT does not know node `ghost`");
    r.stderr_has("Attribute 'groups' is not specified");
    assert!(!c.calls().contains("nodeset ghost"), "{}", c.calls());
}

#[test]
fn a_bad_nodetype_source_is_a_config_error_in_check_and_fatal_at_load() {
    let c = Cluster::new("xcat-nodetype-bad", &["node1"], "", "");
    c.edit(
        &format!("source = \"{NODETYPE}\"\n"),
        "source = \"os=rhels8.6,arch=x86_64\"\n",
    );
    let r = c.test().check("node1", "nodetype").run();
    r.code(78);
    r.stderr_has("lacks `profile`");
    let line = std::fs::read_to_string(c.s.path("reimage.toml"))
        .expect("config")
        .lines()
        .position(|l| l.starts_with("source = \"os=rhels8.6,arch=x86_64\""))
        .expect("the line")
        + 1;
    r.stderr_has(&format!("reimage.toml:{line}:1:"));
    let r = c.load("node1", "nodetype");
    r.code(1);
    r.stderr_has("refusing to load image `nodetype`");
    assert_eq!(c.calls(), "", "nothing ran");
}

#[test]
fn check_names_what_an_image_resolves_to() {
    let c = Cluster::new("xcat-check-nodetype", &["node1"], "", "");
    let r = c.test().check("node1", "nodetype").run();
    r.code(0);
    r.stdout_has("xCAT node: node1, image: nodetype os=rhels8.6, arch=x86_64, profile=compute (chdef, then `nodeset NODE install`)");
    r.stdout_has("next boot: set_boot = \"net\": before each power try, `rsetboot NODE net`");
    let r = c.test().check("node1", "rhel").run();
    r.stdout_has(&format!("xCAT node: node1, osimage: {IMAGE}"));
}

// --- 9. The man page ---------------------------------------------------------------

#[test]
fn the_man_page_says_what_each_xcat_answer_means() {
    let man = std::fs::read_to_string(repo("man/reimage.toml.5")).expect("man page");
    let start = man.find("SECTION: PROVISIONER-XCAT").expect("xcat section");
    let end = man.find("END: PROVISIONER-XCAT").expect("xcat section end");
    let xcat = man[start..end]
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "");
    for want in [
        "XCATROOT",
        "sbin/nodeset",
        "xcat_root",
        "bin_dir",
        "https,sshd",
        "installing prep",
        "xcatdebugmode",
        "nodeset stat",
        "booted",
        "netbooting",
        "Running",
        "Not Activated",
        "rpower NODE boot",
        "power_tries",
        "power_wait",
        "command_timeout",
        "stall timer",
        "limit_noderange",
        "XCATHOST",
        "set_boot",
        "rsetboot NODE net",
        "NODE: Network",
        "rnetboot NODE",
        "Unable to identify plugin",
        "UEFI",
        "chdef",
        "os=rhels8.6,arch=x86_64,profile=compute",
        "2.13.8",
    ] {
        assert!(xcat.contains(want), "the xcat section lacks {want:?}");
    }
}

// --- power-off ---------------------------------------------------------------

#[test]
fn power_off_is_rpower_off_and_an_unknown_node_is_fatal() {
    let c = Cluster::new("xcat-off", &["node1"], "", "");
    let r = c.test().power_off("node1").args(&["--image", "rhel"]).run();
    r.code(0);
    let root = c.root().display().to_string();
    assert!(
        c.messages("node1", "output")
            .join("\n")
            .contains(&format!("{root}/bin/rpower node1 off")),
        "{:?}",
        c.messages("node1", "output")
    );
    assert_eq!(c.node("node1", "power"), "off");
    assert_eq!(c.node("node1", "status"), "powering-off");
    // xCAT answers `off` for a node that is off: done again.
    c.test()
        .power_off("node1")
        .args(&["--image", "rhel"])
        .run()
        .code(0);
    c.test()
        .power_off("ghost")
        .args(&["--image", "rhel"])
        .run()
        .code(1)
        .stderr_has("xCAT does not know node `ghost`");
}
