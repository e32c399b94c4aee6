//! The `xcat` provisioner against stand-ins for xCAT's nodeset, rpower,
//! nodestat and lsdef (tests/standins/xcat/: bash scripts emulating xCAT's
//! documented output; no real xCAT runs here). Each test gets its own
//! stand-in cluster directory ($XCAT_STANDIN_DIR) and its own `bin_dir`.

use crate::common;
use crate::test::{Output, Test};
use common::{Scratch, of_kind, repo};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const IMAGE: &str = "rhels7-x86_64-compute";

/// An install that takes about 1.2 s after power on or reset.
const QUICK: &str = "\
0|noping|powering-on|-
200|install {osimage}|installing|-
900|noping|booting|boot
2000|sshd|booted|boot
";

/// An install that hangs in the installer.
const HANGS: &str = "\
0|noping|powering-on|-
200|install {osimage}|installing|-
";

/// A stand-in xCAT cluster with its nodes, and a config using it.
struct Cluster {
    s: Scratch,
}

impl Cluster {
    /// Nodes `nodes`, the stand-ins in a fresh bin_dir, `timeline` for every
    /// node, and `[provisioners.x]` with `extra` keys.
    fn new(name: &str, nodes: &[&str], timeline: &str, extra: &str) -> Cluster {
        let s = Scratch::new(name);
        let bin = s.path("xcat-bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        for f in ["common.sh", "nodeset", "rpower", "nodestat", "lsdef"] {
            let text = std::fs::read_to_string(repo(&format!("tests/standins/xcat/{f}")))
                .expect("stand-in script");
            s.script(&format!("xcat-bin/{f}"), &text);
        }
        for n in nodes {
            std::fs::create_dir_all(s.path(&format!("cluster/nodes/{n}"))).expect("node dir");
        }
        s.write("cluster/osimages", &format!("{IMAGE}\n"));
        s.write("cluster/timeline", timeline);
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
bin_dir = "{bin}"
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

[images.missing]
os = "none"
provisioner = "x"
source = "no-such-osimage"

{computers}"#,
            bin = bin.display()
        ));
        Cluster { s }
    }

    fn dir(&self) -> PathBuf {
        self.s.path("cluster")
    }

    /// A run against this cluster's stand-in commands.
    fn test(&self) -> Test<'_> {
        Test::with(&self.s)
            .env("XCAT_STANDIN_DIR", self.dir())
            .limit(Duration::from_secs(40))
    }

    fn load(&self, computer: &str, image: &str) -> Output {
        self.test().load(computer, image).run()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir().join("calls")).unwrap_or_default()
    }

    fn messages(&self, computer: &str, kind: &str) -> Vec<String> {
        of_kind(&self.s.events(computer), kind)
            .iter()
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect()
    }
}

#[test]
fn clean_install_powers_on_and_reports_every_status_change() {
    let c = Cluster::new("xcat-clean", &["node1"], QUICK, "stall_timeout = \"5s\"");
    c.s.write("cluster/nodes/node1/power", "off\n");
    c.s.write("cluster/crlf", "");
    let r = c.load("node1", "rhel");
    r.code(0);
    let calls = c.calls();
    assert!(
        calls.contains(&format!("nodeset node1 osimage={IMAGE}")),
        "{calls}"
    );
    assert!(calls.contains("rpower node1 on"), "{calls}");
    assert!(!calls.contains("rpower node1 reset"), "{calls}");
    let progress = c.messages("node1", "progress").join("\n");
    assert!(progress.contains("power was off: rpower on"), "{progress}");
    assert!(
        progress.contains(&format!("nodestat: install {IMAGE} · status: installing")),
        "{progress}"
    );
    assert!(progress.contains("status: booting"), "{progress}");
    let ends = c.messages("node1", "step-end").join("\n");
    assert!(ends.contains("installed after"), "{ends}");
    assert!(ends.contains("load slot 1 of 10"), "{ends}");
    // The stale `booted` from before the load did not end it early.
    assert!(r.took >= Duration::from_millis(900), "{r:?}");
}

#[test]
fn provision_resets_a_running_node_then_post_load_is_immediate() {
    let c = Cluster::new("xcat-provision", &["node2"], QUICK, "");
    let r = c.test().provision("node2", "rhel").run();
    r.code(0);
    let calls = c.calls();
    assert!(calls.contains("rpower node2 reset"), "{calls}");
    assert!(!calls.contains("rpower node2 on"), "{calls}");
    let results: Vec<_> = of_kind(&c.s.events("node2"), "result")
        .iter()
        .map(|e| (e["phase"].clone(), e["result"].clone()))
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(|(_, r)| r == "done"), "{results:?}");
}

#[test]
fn a_stalled_install_asks_for_a_retry() {
    let c = Cluster::new("xcat-stall", &["node3"], HANGS, "stall_timeout = \"1s\"");
    let r = c.load("node3", "rhel");
    r.code(75);
    r.stderr_has("no change for 1s");
    r.stderr_has("node3");
    r.stderr_has("nodestat node3");
    assert!(r.took < Duration::from_secs(10), "{r:?}");
}

#[test]
fn the_last_attempt_answers_fatal_instead_of_retry() {
    let c = Cluster::new("xcat-last", &["node4"], HANGS, "stall_timeout = \"1s\"");
    let r = c.test().load("node4", "rhel").attempt(2, 2).run();
    r.code(1);
    r.stderr_has("no attempts left");
}

#[test]
fn a_power_failure_asks_for_a_retry() {
    let c = Cluster::new("xcat-power", &["node5"], QUICK, "");
    c.s.write(
        "cluster/fail/rpower",
        "Unable to get IPMI session: timeout\n",
    );
    let r = c.load("node5", "rhel");
    r.code(75);
    r.stderr_has("rpower node5 stat");
    r.stderr_has("IPMI");
    r.stderr_has("computer `node5`");
}

#[test]
fn an_unknown_node_is_fatal_and_named() {
    let c = Cluster::new("xcat-ghost", &["node6"], QUICK, "");
    let r = c.load("ghost", "rhel");
    r.code(1);
    r.stderr_has("xCAT does not know node `ghost`");
    r.stderr_has("lsdef -t node -o ghost");
    assert!(!c.calls().contains("rpower"), "{}", c.calls());
}

#[test]
fn an_unknown_osimage_is_fatal() {
    let c = Cluster::new("xcat-noimage", &["node7"], QUICK, "");
    let r = c.load("node7", "missing");
    r.code(1);
    r.stderr_has("no-such-osimage");
    r.stderr_has("lsdef -t osimage");
    assert!(!c.calls().contains("rpower"), "{}", c.calls());
}

#[test]
fn reload_time_under_ten_minutes_is_a_config_error() {
    let c = Cluster::new("xcat-short", &["node8"], QUICK, "");
    let text = std::fs::read_to_string(c.s.path("reimage.toml")).expect("config");
    c.s.write(
        "reimage.toml",
        &text.replace("reload_time = \"10m\"", "reload_time = \"5m\""),
    );
    let r = c.load("node8", "rhel");
    r.code(78);
    r.stderr_has("reload_time");
}

#[test]
fn check_describes_the_load() {
    let c = Cluster::new("xcat-check", &["node9"], QUICK, "stall_timeout = \"1m\"");
    let r = c.test().check("node9", "rhel").run();
    r.code(0);
    let text = format!("{}{}", r.stdout, r.stderr);
    for want in [
        "xcat-bin",
        &format!("osimage: {IMAGE}"),
        "stall timeout (no status change): 1m, 1m30s, 2m15s",
        "at most 10",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
}

/// Eleven loads through one management node with max_concurrent_loads =
/// 10: ten install at once, the eleventh waits for a slot and then loads.
#[test]
fn eleven_loads_share_ten_slots() {
    let nodes: Vec<String> = (1..=11).map(|i| format!("n{i:02}")).collect();
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let slow = "\
0|noping|powering-on|-
300|install {osimage}|installing|-
2500|sshd|booted|boot
";
    let c = Cluster::new(
        "xcat-eleven",
        &names,
        slow,
        "poll_interval = \"300ms\"\nmax_concurrent_loads = 10",
    );
    let text = std::fs::read_to_string(c.s.path("reimage.toml")).expect("config");
    c.s.write(
        "reimage.toml",
        &text.replace("poll_interval = \"100ms\"\n", ""),
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
    for (n, child) in names.iter().zip(children) {
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The stand-ins log when each install started and ended.
    let log = std::fs::read_to_string(c.dir().join("log")).expect("log");
    let mut start = BTreeMap::new();
    let mut done = BTreeMap::new();
    let mut edges = Vec::new();
    for l in log.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let t: u64 = f[2].parse().expect("time");
        match f[0] {
            "start" => {
                start.insert(f[1].to_string(), t);
                edges.push((t, 1i32));
            }
            _ => {
                done.insert(f[1].to_string(), t);
                edges.push((t, -1));
            }
        }
    }
    assert_eq!((start.len(), done.len()), (11, 11), "{log}");
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
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
        waited.contains("waiting for a load slot: 10/10 busy"),
        "{last}: {waited}"
    );
}

#[test]
fn a_post_load_retry_on_the_last_attempt_is_fatal() {
    // An OS step nothing can pass, on an xCAT node (stand-in cluster).
    let closed = crate::common::free_port();
    let c = Cluster::new(
        "xcat-post-last",
        &["node6"],
        QUICK,
        &format!(
            "\n[os.closed]\nfamily = \"generic\"\nchannel = \"none\"\n\
             steps = [{{ wait = \"port\", port = {closed}, timeout = \"300ms\" }}]\n\n\
             [images.closed]\nos = \"closed\"\nprovisioner = \"x\"\nsource = \"{IMAGE}\"\n"
        ),
    );
    c.test()
        .post_load("node6", "closed")
        .attempt(2, 2)
        .run()
        .code(1)
        .stderr_has("no attempts left");
    c.test()
        .post_load("node6", "closed")
        .attempt(1, 2)
        .run()
        .code(75)
        .stderr_lacks("no attempts left");
}
