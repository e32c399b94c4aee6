//! Several management nodes against one coordination store (a real,
//! throwaway PostgreSQL cluster started here), and the fleet view
//! (`status`, `log`). Two state directories with their own configs stand
//! for two hosts, `node-a` and `node-b`.
//!
//! The split brain: host a's path to the store hangs (a proxy that stops
//! forwarding, or the postmaster SIGSTOPped) while it loads; host b takes
//! the computer once a's lease has run out. The load command logs when
//! each load starts, a thread on the first load's pidfd sees when it ends,
//! and every round asserts that the second load started after the first
//! had ended. `REIMAGE_SPLIT_ROUNDS` sets the rounds of each scenario
//! (default 3).

use crate::common::{Scratch, alive, bin, eventually, wait_limit};
use crate::test::{Output, Test};
use rustix::process::{Pid, Signal};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use testbed::pg::{Pg, Proxy};
use testbed::port::Port;
use testbed::xcat::Xcat;

const OSIMAGE: &str = "rhels7-x86_64-compute";

/// The load command: records its pid, logs its start (wall clock, for the
/// split-brain rounds), then behaves as the image's source says.
const LOAD: &str = r#"#!/bin/sh
echo $$ > "$PIDS/$1.tmp" && mv "$PIDS/$1.tmp" "$PIDS/$1"
echo "start $2 $(date +%s.%N) $$" >> "$PIDS/$1.log"
case "$2" in
  sleep) exec sleep 120 ;;
  hold) exec sleep 600 ;;
  brief) sleep 0.3; echo "end $2 $(date +%s.%N) $$" >> "$PIDS/$1.log" ;;
  retry) echo "node did not answer" >&2; exit 75 ;;
  fatal) echo "no such image" >&2; exit 1 ;;
  *) exit 0 ;;
esac
"#;

/// Two hosts' configs in one scratch directory.
struct Site {
    s: Scratch,
}

impl Site {
    /// Configs for hosts a and b; `coordination` is the body of
    /// `[coordination]` without `host` (None: no store); `extra` is added
    /// to both.
    fn new(name: &str, coordination: Option<&str>, extra: &str) -> Site {
        Site::hosts(name, [coordination, coordination], extra)
    }

    /// Like [`Site::new`], each host with its own `[coordination]` body
    /// (a's may reach the store through a proxy).
    fn hosts(name: &str, coordination: [Option<&str>; 2], extra: &str) -> Site {
        let s = Scratch::new(name);
        let pids = s.path("pids");
        std::fs::create_dir_all(&pids).expect("pids dir");
        let script = s.script(
            "load.sh",
            &LOAD.replace("$PIDS", &pids.display().to_string()),
        );
        let mut computers = String::new();
        for i in 1..=12 {
            computers.push_str(&format!(
                "[computers.pc{i}]\naddress = \"127.0.0.1\"\n[computers.n{i:02}]\naddress = \"127.0.0.1\"\nnode = \"n{i:02}\"\n"
            ));
        }
        for (h, coordination) in ["a", "b"].into_iter().zip(coordination) {
            let coord = coordination
                .map(|c| format!("[coordination]\n{c}\nhost = \"node-{h}\"\n"))
                .unwrap_or_default();
            s.write(
                &format!("host-{h}.toml"),
                &format!(
                    r#"state_dir = "{state}"
max_attempts = 1
{coord}
[provisioners.script]
kind = "command"
load = ["{script}", "{{node}}", "{{source}}"]
timeout = "3m"

[os.none]
family = "generic"
channel = "none"
steps = []

[images.quick]
os = "none"
provisioner = "script"
source = "ok"

[images.slow]
os = "none"
provisioner = "script"
source = "sleep"

[images.hold]
os = "none"
provisioner = "script"
source = "hold"

[images.brief]
os = "none"
provisioner = "script"
source = "brief"

[images.retry]
os = "none"
provisioner = "script"
source = "retry"

[images.fatal]
os = "none"
provisioner = "script"
source = "fatal"
{extra}
{computers}"#,
                    state = s.path(&format!("state-{h}")).display(),
                    script = script.display(),
                ),
            );
        }
        Site { s }
    }

    fn reimage(&self, host: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config")
            .arg(self.s.path(&format!("host-{host}.toml")))
            .args(args)
            .env_remove("REIMAGE_CONFIG")
            .env_remove("REIMAGE_STATE_DIR")
            .env("PGPASSFILE", "/nonexistent");
        c
    }

    fn run(&self, host: &str, args: &[&str]) -> Output {
        self.run_pgpass(host, args, Path::new("/nonexistent"))
    }

    /// A run with `PGPASSFILE` set to `pgpass`.
    fn run_pgpass(&self, host: &str, args: &[&str], pgpass: &Path) -> Output {
        Test::with(&self.s)
            .no_config_flag()
            .arg("--config")
            .arg(self.s.path(&format!("host-{host}.toml")))
            .args(args)
            .env("PGPASSFILE", pgpass)
            .limit(Duration::from_secs(60))
            .run()
    }

    fn spawn(&self, host: &str, args: &[&str]) -> Child {
        self.reimage(host, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn reimage")
    }

    /// The pid the load command of `node` wrote, once it wrote one.
    fn load_pid(&self, node: &str) -> i32 {
        let p = self.s.path(&format!("pids/{node}"));
        let mut pid = None;
        assert!(
            eventually(Duration::from_secs(30), || {
                pid = std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                pid.is_some()
            }),
            "the load command of {node} did not start"
        );
        pid.unwrap_or(0)
    }

    fn record(&self, host: &str, computer: &str) -> serde_json::Value {
        let p = self
            .s
            .path(&format!("state-{host}/computers/{computer}/last-run.json"));
        serde_json::from_str(&std::fs::read_to_string(&p).expect("last-run.json"))
            .expect("record is JSON")
    }
}

fn signal(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Waits for a spawned reimage; its code, stdout, stderr.
fn finish(child: Child) -> (i32, String, String) {
    let mut child = child;
    let code = wait_limit(&mut child, Duration::from_secs(60));
    let out = child.wait_with_output().expect("output");
    (
        code.unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn coordination(pg: &Pg, lease: &str) -> String {
    format!("url = \"{}\"\nlease = \"{lease}\"", pg.url())
}

#[test]
fn a_second_host_gets_73_naming_the_holder() {
    let pg = Pg::start("holder");
    let site = Site::new("site-holder", Some(&coordination(&pg, "20s")), "");
    let a = site.spawn("a", &["load", "pc1", "--image", "slow"]);
    let child = site.load_pid("pc1");

    let b = site.run("b", &["load", "pc1", "--image", "quick"]);
    assert_eq!(b.code, 73, "{}", b.stderr);
    for want in [
        "computer `pc1` is held by another reimage run".to_string(),
        "host node-a".to_string(),
        format!("pid {}", a.id()),
        "`load --image slow --attempt 1`".to_string(),
        "started 20".to_string(),
        "generation 1".to_string(),
    ] {
        assert!(b.stderr.contains(&want), "missing {want:?}: {}", b.stderr);
    }
    // A second run on the same host meets the local lock first, and names
    // the holder as fully.
    let again = site.run("a", &["load", "pc1", "--image", "quick"]);
    assert_eq!(again.code, 73, "{}", again.stderr);
    for want in [
        "computer `pc1` is held by another reimage run".to_string(),
        "host node-a".to_string(),
        format!("pid {}", a.id()),
        "`load --image slow`".to_string(),
        "started 20".to_string(),
    ] {
        assert!(
            again.stderr.contains(&want),
            "missing {want:?}: {}",
            again.stderr
        );
    }
    assert_eq!(
        site.load_pid("pc1"),
        child,
        "host b must not have run the load command"
    );
    // The store's row, readable with psql.
    assert_eq!(
        pg.psql("SELECT host || ' ' || pid || ' ' || command FROM reimage_holder"),
        format!("node-a {} load --image slow --attempt 1\n", a.id())
    );
    assert_eq!(pg.psql("SELECT version FROM reimage_schema"), "2\n");

    // Host b's fleet view shows the run on host a.
    let st = site.run("b", &["status", "pc1", "--json"]);
    assert_eq!(st.code, 0, "{}", st.stderr);
    let v: serde_json::Value = serde_json::from_str(st.stdout.trim()).expect("status JSON");
    assert_eq!(v["run"], format!("running on node-a (pid {})", a.id()));
    assert_eq!(v["holder"]["command"], "load --image slow --attempt 1");

    // SIGTERM: the run stops its child and gives the computer back at once.
    signal(a.id() as i32, Signal::TERM);
    let (code, _, err) = finish(a);
    assert_eq!(code, 143, "{err}");
    assert!(eventually(Duration::from_secs(10), || !alive(child)));
    // Given back: the row stays, released, and counts the holders.
    assert_eq!(
        pg.psql("SELECT generation || ' ' || (released IS NOT NULL) FROM reimage_holder"),
        "1 true\n"
    );
    let b = site.run("b", &["load", "pc1", "--image", "quick"]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    b.stderr_has("holding computer `pc1` as generation 2");
}

#[test]
fn a_killed_holder_frees_the_computer_within_the_lease() {
    let pg = Pg::start("killed");
    // 10 s: the dead run's lease holds 7.5 s at least (renewed every
    // quarter lease), time enough for host b's first try on a loaded
    // machine to be refused.
    let lease = Duration::from_secs(10);
    let site = Site::new("site-killed", Some(&coordination(&pg, "10s")), "");
    let mut a = site.spawn("a", &["load", "pc1", "--image", "slow"]);
    let child = site.load_pid("pc1");
    let a_pid = a.id() as i32;
    signal(a_pid, Signal::KILL);
    let killed = Instant::now();
    let _ = a.wait();
    signal(child, Signal::KILL);
    // The dead run's lease is still in the store: nobody removed it.
    assert_eq!(
        pg.psql("SELECT pid FROM reimage_holder WHERE computer = 'pc1'"),
        format!("{a_pid}\n")
    );
    let mut refused = 0;
    let got = loop {
        let b = site.run("b", &["load", "pc1", "--image", "quick"]);
        if b.code != 73 {
            assert_eq!(b.code, 0, "{}", b.stderr);
            break killed.elapsed();
        }
        assert!(b.stderr.contains(&format!("pid {a_pid}")), "{}", b.stderr);
        refused += 1;
        assert!(
            killed.elapsed() < lease + Duration::from_secs(30),
            "host b did not get pc1 within the lease ({lease:?}) after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("takeover after SIGKILL: {got:?} (lease {lease:?}, {refused} runs refused before)");
    assert!(
        refused > 0,
        "the lease must hold the computer after SIGKILL"
    );
    assert!(got <= lease + Duration::from_secs(30), "{got:?}");
    assert_eq!(
        pg.psql("SELECT host FROM reimage_holder WHERE computer = 'pc1' AND released IS NULL"),
        "",
        "b released it at the end of its run"
    );
}

/// Two hosts with the xCAT stand-in (tests/standins/xcat/xcatclient,
/// written from xcat-core and VCL's xCAT.pm; no real xCAT runs here) as one
/// xCAT root and one cluster of nodes n01..n12 that both reach, a store
/// with `lease`, and `max` concurrent loads.
fn xcat_site(name: &str, pg: &Pg, lease: &str, max: u32, behaviour: &str) -> Site {
    let site = Site::new(
        name,
        Some(&coordination(pg, lease)),
        &format!(
            r#"
[provisioners.x]
kind = "xcat"
reload_time = "10m"
overall_timeout = "90s"
poll_interval = "300ms"
max_concurrent_loads = {max}
slot_wait = "90s"

[images.rhel]
os = "none"
provisioner = "x"
source = "{OSIMAGE}"
"#
        ),
    );
    let x = Xcat::install(&site.s.dir);
    for i in 1..=12 {
        x.node(&format!("n{i:02}"));
    }
    x.osimage(OSIMAGE, "install rhels7.9 x86_64 compute");
    x.behaviour(behaviour);
    // The schema up front, as an admin would, so the tests can watch it.
    site.run("a", &["setup-db"]).code(0);
    site
}

impl Site {
    /// An xCAT load of `node` on `host` through the stand-in.
    fn xcat_load(&self, host: &str, node: &str) -> Command {
        let mut c = self.reimage(host, &["load", node, "--image", "rhel"]);
        c.envs(Xcat::at(&self.s.dir).env());
        c
    }
}

#[test]
fn twelve_xcat_loads_on_two_hosts_share_ten_site_wide_slots() {
    let pg = Pg::start("slots");
    // Each install lasts five looks of each host's poll: long enough that
    // the twelve overlap.
    let site = xcat_site("site-slots", &pg, "10s", 10, "install_polls=5\n");
    let s = &site.s;
    let children: Vec<(String, Child)> = (1..=12)
        .map(|i| {
            let node = format!("n{i:02}");
            let host = if i % 2 == 0 { "a" } else { "b" };
            let mut c = site.xcat_load(host, &node);
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            (node, c.spawn().expect("spawn"))
        })
        .collect();
    // The store's slot rows while the loads run.
    let mut rows_seen = 0;
    while children.iter().any(|(_, c)| alive(c.id() as i32)) {
        let n: u32 = pg
            .psql("SELECT count(*) FROM reimage_slot")
            .trim()
            .parse()
            .unwrap_or(0);
        rows_seen = rows_seen.max(n);
        std::thread::sleep(Duration::from_millis(200));
    }
    for (node, child) in children {
        let (code, _, err) = finish(child);
        assert_eq!(code, 0, "{node}: {err}");
    }
    // The stand-in logs each install set up and each one ended, in the
    // order they happened.
    let log = std::fs::read_to_string(s.path("xcat/log")).expect("stand-in log");
    let mut starts = BTreeMap::new();
    let (mut now, mut most) = (0, 0);
    for (t, l) in log.lines().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f[0] {
            "start" => {
                starts.insert(f[1].to_string(), t);
                now += 1;
            }
            "next" => now -= 1,
            _ => {}
        }
        most = most.max(now);
    }
    assert_eq!(starts.len(), 12, "all 12 loads started: {log}");
    eprintln!("installs at once over both hosts: at most {most}; slot rows seen: {rows_seen}");
    assert!(most <= 10, "{most} installs at once over both hosts: {log}");
    assert_eq!(now, 0, "every install ended: {log}");
    assert!(
        (1..=10).contains(&rows_seen),
        "the slots were taken in the store: {rows_seen}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM reimage_slot"), "0\n");
}

#[test]
fn a_killed_holder_frees_its_load_slot_within_the_lease() {
    let pg = Pg::start("slotkill");
    // n01's install never ends by itself (an admin ends it below); n02's
    // does.
    let site = xcat_site("site-slotkill", &pg, "4s", 1, "hang=1\n");
    site.s.write("xcat/nodes/n02/behaviour", "hang=0\n");
    let mut a = site
        .xcat_load("a", "n01")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let a_pid = a.id() as i32;
    assert!(
        eventually(Duration::from_secs(30), || {
            std::fs::read_to_string(site.s.path("xcat/log")).is_ok_and(|l| l.contains("start n01"))
        }),
        "host a's load did not reach nodeset"
    );
    assert_eq!(
        pg.psql("SELECT pid || ' ' || label FROM reimage_slot"),
        format!("{a_pid} n01\n")
    );
    signal(a_pid, Signal::KILL);
    let killed = Instant::now();
    let _ = a.wait();
    // The admin ends the install nobody will finish (xCAT counts it as a
    // load until then); the store still has the dead run's slot.
    let out = Command::new(site.s.path("opt-xcat/sbin/nodeset"))
        .args(["n01", "boot"])
        .envs(Xcat::at(&site.s.dir).env())
        .output()
        .expect("nodeset");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        pg.psql("SELECT pid FROM reimage_slot"),
        format!("{a_pid}\n")
    );
    let (code, _, err) = finish(
        site.xcat_load("b", "n02")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let took = killed.elapsed();
    eprintln!("slot free again after SIGKILL: {took:?} (lease 4s)");
    assert_eq!(code, 0, "{err}");
    // The dead run's slot was still in the store after the kill (above);
    // b got it once the lease ran out, with no admin action on the store.
    assert!(
        took < Duration::from_secs(4 + 30),
        "slot not free within the lease: {took:?}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM reimage_slot"), "0\n");
}

#[test]
fn a_lost_store_stops_the_run_and_kills_its_child() {
    let mut pg = Pg::start("lost");
    let site = Site::new("site-lost", Some(&coordination(&pg, "4s")), "");
    let a = site.spawn("a", &["load", "pc1", "--image", "slow"]);
    let child = site.load_pid("pc1");
    pg.stop();
    let (code, _, err) = finish(a);
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains("lease lost on computer `pc1` (generation 1): no renewal succeeded"),
        "{err}"
    );
    assert!(
        eventually(Duration::from_secs(10), || !alive(child)),
        "the load command (pid {child}) must be killed"
    );
    let r = site.record("a", "pc1");
    assert_eq!(r["exit_code"], 69, "{r}");
    assert_eq!(r["result"], "interrupted", "{r}");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("lease lost")),
        "{r}"
    );

    // A run that cannot reach the store does not start.
    let b = site.run("b", &["load", "pc2", "--image", "quick"]);
    assert_eq!(b.code, 69, "{}", b.stderr);
    assert!(b.stderr.contains("coordination store"), "{}", b.stderr);
    assert!(
        !site.s.path("pids/pc2").exists(),
        "no load without the store"
    );

    // status still shows this host's records, and says what it could not see.
    site.run("a", &["status", "pc1"])
        .code(69)
        .stderr_has("runs on other management nodes are not shown")
        .stdout_has("interrupted");
}

#[test]
fn setup_db_creates_a_versioned_schema_and_a_newer_one_is_refused() {
    let pg = Pg::start("setup");
    let site = Site::new("site-setup", Some(&coordination(&pg, "10s")), "");
    for _ in 0..2 {
        let r = site.run("a", &["setup-db"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains("schema version 2 ready"), "{}", r.stdout);
    }
    assert_eq!(
        pg.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE tablename LIKE 'reimage_%'"),
        "reimage_holder,reimage_schema,reimage_slot\n"
    );
    pg.psql("UPDATE reimage_schema SET version = 3");
    let r = site.run("b", &["load", "pc1", "--image", "quick"]);
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(r.stderr.contains("schema version 3"), "{}", r.stderr);
    // setup-db leaves a newer schema as it is.
    let r = site.run("a", &["setup-db"]);
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert_eq!(pg.psql("SELECT version FROM reimage_schema"), "3\n");

    Test::with(&site.s)
        .no_config_flag()
        .arg("--config")
        .arg(site.s.write("plain.toml", "max_attempts = 1\n"))
        .arg("setup-db")
        .run()
        .code(64)
        .stderr_has("[coordination]");
}

fn status_lines(site: &Site) -> BTreeMap<String, serde_json::Value> {
    let r = site.run("a", &["status", "--json"]);
    // 1 when a run it shows failed (issue 24).
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("status line is JSON");
            (v["computer"].as_str().unwrap_or("").to_string(), v)
        })
        .collect()
}

#[test]
fn status_and_log_show_every_result_and_stale_runs() {
    let site = Site::new("site-status", None, "");
    assert_eq!(site.run("a", &["load", "pc1", "--image", "quick"]).code, 0);
    assert_eq!(
        site.run(
            "a",
            &[
                "provision",
                "pc1",
                "--image",
                "quick",
                "--reservation",
                "4711"
            ]
        )
        .code,
        0
    );
    assert_eq!(
        site.run("a", &["load", "pc2", "--image", "retry", "--of", "3"])
            .code,
        75
    );
    assert_eq!(
        site.run("a", &["provision", "pc3", "--image", "fatal"])
            .code,
        1
    );
    // Interrupted: SIGTERM mid-load.
    let c4 = site.spawn("a", &["load", "pc4", "--image", "slow"]);
    site.load_pid("pc4");
    signal(c4.id() as i32, Signal::TERM);
    assert_eq!(finish(c4).0, 143);
    // Stale: the run was SIGKILLed, its record still says running.
    let mut c5 = site.spawn("a", &["load", "pc5", "--image", "slow"]);
    let load5 = site.load_pid("pc5");
    let pid5 = c5.id();
    signal(pid5 as i32, Signal::KILL);
    let _ = c5.wait();
    signal(load5, Signal::KILL);
    // In progress.
    let c6 = site.spawn("a", &["load", "pc6", "--image", "slow"]);
    site.load_pid("pc6");
    let pid6 = c6.id();

    let st = status_lines(&site);
    let want: [(&str, &str, Option<i64>, String); 7] = [
        ("pc1", "done", Some(0), "idle".into()),
        ("pc2", "retry", Some(75), "idle".into()),
        ("pc3", "fatal", Some(1), "idle".into()),
        ("pc4", "interrupted", Some(143), "idle".into()),
        ("pc5", "running", None, format!("stale (pid {pid5} gone)")),
        ("pc6", "running", None, format!("running (pid {pid6})")),
        ("pc7", "", None, "never run".into()),
    ];
    for (c, result, code, runs) in &want {
        let v = &st[*c];
        assert_eq!(v["run"], *runs, "{c}: {v}");
        if !result.is_empty() {
            assert_eq!(v["record"]["result"], *result, "{c}: {v}");
            assert_eq!(v["record"]["exit_code"].as_i64(), *code, "{c}: {v}");
        } else {
            assert!(v.get("record").is_none(), "{c}: {v}");
        }
    }
    assert_eq!(st["pc1"]["record"]["reservation"], "4711");
    assert_eq!(st["pc1"]["record"]["command"], "provision");

    // The wide table: a header and one line per computer asked for; the
    // stale run failed (issue 24: exit 1).
    let r = site.run("a", &["status", "-w", "pc5", "pc1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(
        lines[0].starts_with("COMPUTER")
            && lines[0].contains(" RUN ")
            && lines[0].ends_with(" REASON"),
        "{}",
        r.stdout
    );
    assert!(
        lines[1].starts_with("pc1 ") && lines[1].contains(" done "),
        "{}",
        r.stdout
    );
    assert!(
        lines[1].contains("4711") && lines[1].ends_with("idle"),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].starts_with("pc5 ")
            && lines[2].contains(&format!(
                "stale (pid {pid5} gone)  pid {pid5} gone: killed or crashed"
            )),
        "{}",
        r.stdout
    );
    let r = site.run("a", &["status", "nosuch"]);
    assert_eq!(r.code, 64, "{}", r.stderr);

    // log: the last run by default, any run by number, all of them.
    let r = site.run("a", &["log", "pc1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("provision --image quick"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("load --image quick --attempt 1"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.trim_end().ends_with("is ready with image quick"),
        "{}",
        r.stdout
    );
    let r = site.run("a", &["log", "pc1", "--run", "1"]);
    assert!(
        r.stdout.contains("load --image quick --attempt 1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(": exit 0"), "{}", r.stdout);
    let r = site.run("a", &["log", "pc1", "--all"]);
    assert_eq!(r.stdout.matches("== run ").count(), 2, "{}", r.stdout);
    let r = site.run("a", &["log", "pc1", "--run", "3"]);
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(r.stderr.contains("has 2 run(s)"), "{}", r.stderr);
    let r = site.run("a", &["log", "pc3", "--json"]);
    let kinds: Vec<String> = r
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["kind"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("start"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("run"), "{kinds:?}");
    let r = site.run("a", &["log", "pc2"]);
    assert!(r.stdout.contains("load: retry"), "{}", r.stdout);
    assert!(r.stdout.contains("exit 75"), "{}", r.stdout);
    // A stale run's log ends without a run event; --follow does not hang.
    let r = site.run("a", &["log", "pc5", "--follow"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("the run's process is gone"),
        "{}",
        r.stdout
    );

    // --follow on the run in progress shows events until it ends.
    // (Whether it attaches before or after the end, it shows the whole run.)
    let f = site.spawn("a", &["log", "pc6", "--follow"]);
    signal(pid6 as i32, Signal::TERM);
    let (code, out, err) = finish(f);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("load --image slow"), "{out}");
    assert!(out.trim_end().ends_with("interrupted by SIGTERM"), "{out}");
    assert!(out.contains(": exit 143"), "{out}");
    let _ = finish(c6);
}

#[test]
fn a_bad_coordination_table_is_a_config_error_at_its_key() {
    let site = Site::new(
        "site-config",
        Some("url = \"postgresql://db.example/reimage\""),
        "",
    );
    let r = site.run("a", &["check"]);
    assert_eq!(r.code, 78, "{}", r.stderr);
    assert!(r.stderr.contains("host-a.toml:4:1:"), "{}", r.stderr);
    assert!(r.stderr.contains("`url` names no user"), "{}", r.stderr);

    let site = Site::new(
        "site-config-lease",
        Some("url = \"postgresql://reimage@db.example/reimage\"\nlease = \"3s\""),
        "",
    );
    let r = site.run("a", &["check"]);
    assert_eq!(r.code, 78, "{}", r.stderr);
    assert!(r.stderr.contains("host-a.toml:5:1:"), "{}", r.stderr);
    assert!(
        r.stderr.contains("`lease` must be 4s or more"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_password_comes_from_a_file_or_pgpassfile_and_tls_is_verified() {
    const PW: &str = "s3cret-Pw";
    let pg = Pg::start_secure("secure", PW);
    let url = format!(
        "postgresql://reimage@localhost:{}/reimage?sslmode=require",
        pg.port
    );
    let ca = format!("ca_file = \"{}\"", pg.cert().display());
    let coord = |extra: &str| format!("url = \"{url}\"\nlease = \"10s\"\n{extra}");

    // No password anywhere: refused at once, and nothing leaks.
    let site = Site::new("site-nopw", Some(&coord(&ca)), "");
    let r = site.run("a", &["load", "pc1", "--image", "quick"]);
    r.code(69).stderr_has("password").stderr_lacks(PW);
    assert!(
        !site.s.path("pids/pc1").exists(),
        "no load without the store"
    );

    // password_file, and the server's certificate checked against ca_file.
    let pw = site.s.write("db-password", &format!("{PW}\n"));
    let file = format!("password_file = \"{}\"", pw.display());
    let site = Site::new("site-pwfile", Some(&coord(&format!("{ca}\n{file}"))), "");
    site.run("a", &["load", "pc1", "--image", "quick"])
        .code(0)
        .stderr_lacks(PW);
    // Without ca_file the self-signed certificate is not trusted.
    let site = Site::new("site-noca", Some(&coord(&file)), "");
    site.run("a", &["load", "pc1", "--image", "quick"])
        .code(69)
        .stderr_has("certificate");

    // PGPASSFILE in libpq's format; ignored when others can read it.
    let site = Site::new("site-pgpass", Some(&coord(&ca)), "");
    let pgpass = site.s.write(
        "pgpass",
        &format!(
            "otherhost:*:*:*:wrong\nlocalhost:{}:reimage:reimage:{PW}\n",
            pg.port
        ),
    );
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    site.run_pgpass("a", &["load", "pc1", "--image", "quick"], &pgpass)
        .code(0);
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    site.run_pgpass("a", &["load", "pc2", "--image", "quick"], &pgpass)
        .code(69)
        .stderr_has("password missing")
        .stderr_has(&format!(
            "the password file {} was ignored because group or others may access it (mode 0644)",
            pgpass.display()
        ))
        .stderr_has(&format!("chmod 600 {}", pgpass.display()))
        .stderr_lacks(PW);
}

/// Wall-clock seconds since the epoch, as the load command's `date` says.
fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A thread that returns the wall-clock time at which process `pid` ends,
/// seen through its pidfd (at or after the real end: an overlap it
/// measures is never smaller than the real one).
fn end_watch(pid: i32) -> JoinHandle<f64> {
    use rustix::event::{PollFd, PollFlags};
    let fd = rustix::process::pidfd_open(
        Pid::from_raw(pid).expect("a pid"),
        rustix::process::PidfdFlags::empty(),
    )
    .expect("pidfd of the load command");
    std::thread::spawn(move || {
        loop {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            let _ = rustix::event::poll(&mut fds, None);
            if !fds[0].revents().is_empty() {
                return wall_now();
            }
        }
    })
}

impl Site {
    /// The starts the load command of `computer` logged with `source`,
    /// wall-clock seconds.
    fn starts(&self, computer: &str, source: &str) -> Vec<f64> {
        std::fs::read_to_string(self.s.path(&format!("pids/{computer}.log")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4 && f[0] == "start" && f[1] == source)
                    .then(|| f[2].parse().ok())
                    .flatten()
            })
            .collect()
    }
}

/// Rounds of each split-brain scenario: `REIMAGE_SPLIT_ROUNDS`, default 3.
fn split_rounds() -> u32 {
    std::env::var("REIMAGE_SPLIT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// How a scenario makes host a's store hang.
struct Freeze<'a> {
    start: &'a dyn Fn(),
    end: &'a dyn Fn(),
}

/// How long the hang of round `k` lasts: from 2.5 s (a little more than
/// the watchdog's half lease, so a's run always loses its lease) to 8 s
/// (two leases), so that the hang ends before, around and after a's
/// lease runs out in the store.
fn hang_of_round(k: u32) -> Duration {
    Duration::from_millis(2500 + (u64::from(k) * 1300) % 5500)
}

/// One round: host a loads `computer` and its store hangs; host b tries
/// until it gets the computer, and loads it. Returns the gap between the
/// end of a's load and the start of b's, in seconds (negative: overlap).
fn split_round(site: &Site, computer: &str, round: u32, freeze: &Freeze) -> f64 {
    let _ = std::fs::remove_file(site.s.path(&format!("pids/{computer}")));
    let a = site.spawn("a", &["load", computer, "--image", "hold"]);
    let load = site.load_pid(computer);
    let ended = end_watch(load);
    // Spread the start of the hang over the renewal cycle (a quarter
    // lease, 1 s): in some rounds a renewal is in flight when it begins.
    std::thread::sleep(Duration::from_millis(150 + (u64::from(round) * 377) % 1000));
    (freeze.start)();
    let frozen = Instant::now();
    let hang = hang_of_round(round);
    let mut thawed = false;
    let (mut held, mut down) = (0, 0);
    let b = loop {
        if !thawed && frozen.elapsed() >= hang {
            (freeze.end)();
            thawed = true;
        }
        let b = site.run("b", &["load", computer, "--image", "brief"]);
        match b.code {
            0 => break b,
            73 => held += 1,
            69 => down += 1,
            _ => panic!("host b: {b:?}"),
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(90),
            "host b never got {computer}: {b:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = frozen.elapsed();
    if !thawed {
        (freeze.end)();
    }
    let a_end = ended.join().expect("end watch");
    let (code, _, err) = finish(a);
    assert_eq!(code, 69, "host a: {err}");
    let lost = format!("lease lost on computer `{computer}` (generation ");
    let generation: i64 = err
        .split(&lost)
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("host a names its lost generation: {err}"));
    let r = site.record("a", computer);
    assert_eq!(r["exit_code"], 69, "{r}");
    assert!(
        r["message"].as_str().is_some_and(|m| m.starts_with(&lost)),
        "{r}"
    );
    // b says whom it took over from, by generation.
    b.stderr_has(&format!(
        "took over computer `{computer}` as generation {}",
        generation + 1
    ))
    .stderr_has(&format!(
        "the lease of generation {generation} (host node-a"
    ));
    let b_start = *site
        .starts(computer, "brief")
        .last()
        .expect("b's load logged its start");
    let gap = b_start - a_end;
    eprintln!(
        "round {round}: a's load ended {gap:.3}s before b's started (hang {hang:.1?}; b got {computer} {took:.1?} after it began; {held} runs refused as held, {down} as store down)"
    );
    gap
}

/// Runs the rounds of one scenario and asserts no overlap in any.
fn split_brain(name: &str, site: &Site, computer: &str, freeze: &Freeze) {
    let rounds = split_rounds();
    let gaps: Vec<f64> = (0..rounds)
        .map(|k| split_round(site, computer, k, freeze))
        .collect();
    let overlaps = gaps.iter().filter(|g| **g <= 0.0).count();
    let worst = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    let most = gaps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = gaps.iter().sum::<f64>() / f64::from(rounds.max(1));
    eprintln!(
        "split brain, {name}: {rounds} rounds, {overlaps} with two loads at once; gap between a's end and b's start: min {worst:.3}s, mean {mean:.3}s, max {most:.3}s (lease 4s)"
    );
    assert_eq!(
        overlaps, 0,
        "two loads of {computer} at once: gaps {gaps:?}"
    );
}

#[test]
fn a_hung_path_to_the_store_never_gives_two_loads_at_once() {
    let pg = Pg::start("split-proxy");
    let proxy = Proxy::to(pg.port);
    let a = format!("url = \"{}\"\nlease = \"4s\"", proxy.url());
    let b = coordination(&pg, "4s");
    let site = Site::hosts("site-split-proxy", [Some(&a), Some(&b)], "");
    split_brain(
        "proxy stops forwarding for host a",
        &site,
        "pc1",
        &Freeze {
            start: &|| proxy.freeze(),
            end: &|| proxy.thaw(),
        },
    );
}

#[test]
fn a_stopped_postmaster_never_gives_two_loads_at_once() {
    let pg = Pg::start("split-stop");
    let site = Site::new("site-split-stop", Some(&coordination(&pg, "4s")), "");
    split_brain(
        "postmaster SIGSTOPped",
        &site,
        "pc1",
        &Freeze {
            start: &|| pg.pause(),
            end: &|| pg.resume(),
        },
    );
}

#[test]
fn an_admin_who_deletes_a_live_holder_row_revokes_it() {
    let pg = Pg::start("revoke");
    // Renewals every 5 s: time for b's look between a's renewals.
    let site = Site::new("site-revoke", Some(&coordination(&pg, "20s")), "");
    let a = site.spawn("a", &["load", "pc1", "--image", "hold"]);
    let load = site.load_pid("pc1");
    let ended = end_watch(load);
    let truncate = pg.psql_result("TRUNCATE reimage_holder");
    assert!(
        truncate
            .as_ref()
            .is_err_and(|e| e.contains("reimage_holder has live leases")),
        "{truncate:?}"
    );
    // Just after a renewal, so that a's next one is a quarter lease away.
    let expires = || pg.psql("SELECT expires FROM reimage_holder WHERE computer = 'pc1'");
    let before = expires();
    assert!(
        eventually(Duration::from_secs(15), || expires() != before),
        "a did not renew its lease"
    );
    pg.psql("DELETE FROM reimage_holder WHERE computer = 'pc1'");
    assert_eq!(
        pg.psql("SELECT host || ' ' || (revoked IS NOT NULL) FROM reimage_holder"),
        "node-a true\n",
        "the live row stays, revoked"
    );
    // b may not load while a still does.
    let b = site.run("b", &["load", "pc1", "--image", "brief"]);
    assert_eq!(b.code, 73, "{b:?}");
    b.stderr_has("an admin revoked its lease");
    assert!(site.starts("pc1", "brief").is_empty());
    // a stops at its next renewal and gives the computer back.
    let (code, _, err) = finish(a);
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains("lease lost on computer `pc1` (generation 1): an admin revoked it"),
        "{err}"
    );
    let a_end = ended.join().expect("end watch");
    let b = site.run("b", &["load", "pc1", "--image", "brief"]);
    b.code(0)
        .stderr_has("holding computer `pc1` as generation 2");
    let b_start = site.starts("pc1", "brief")[0];
    assert!(
        b_start > a_end,
        "b's load started {:.3}s before a's ended",
        a_end - b_start
    );
    // Released rows are deleted as asked.
    pg.psql("DELETE FROM reimage_holder WHERE computer = 'pc1'");
    assert_eq!(pg.psql("SELECT count(*) FROM reimage_holder"), "0\n");
}

#[test]
fn a_second_run_on_the_same_host_names_the_holder() {
    let site = Site::new("site-local-holder", None, "");
    let a = site.spawn("a", &["load", "pc1", "--image", "slow", "--of", "2"]);
    let child = site.load_pid("pc1");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let r = site.run("a", &["load", "pc1", "--image", "quick"]);
    r.code(73)
        .stderr_has("computer `pc1` is held by another reimage run")
        .stderr_has(&format!("host {}", host.trim()))
        .stderr_has(&format!("pid {}", a.id()))
        .stderr_has("`load --image slow` (attempt 1 of 2)")
        .stderr_has("started 20");
    signal(a.id() as i32, Signal::TERM);
    assert_eq!(finish(a).0, 143);
    assert!(eventually(Duration::from_secs(10), || !alive(child)));
}

#[test]
fn a_store_that_refuses_or_never_answers_costs_the_start_limit() {
    // A lease of 40 s: the start waits at most 10 s (tries of 5 s).
    let closed = Port::new();
    let refused = format!(
        "url = \"postgresql://reimage@127.0.0.1:{}/reimage\"\nlease = \"40s\"",
        closed.num()
    );
    let pg = Pg::start("silent");
    let silent = Proxy::silent(pg.port);
    let quiet = format!("url = \"{}\"\nlease = \"40s\"", silent.url());
    let site = Site::hosts("site-silent", [Some(&refused), Some(&quiet)], "");
    let start = Instant::now();
    let runs = [
        (
            "a",
            "load",
            site.spawn("a", &["load", "pc1", "--image", "quick"]),
        ),
        (
            "b",
            "load",
            site.spawn("b", &["load", "pc2", "--image", "quick"]),
        ),
        ("b", "setup-db", site.spawn("b", &["setup-db"])),
    ];
    for (host, what, child) in runs {
        let (code, _, err) = finish(child);
        let took = start.elapsed();
        eprintln!("{what} on host {host}: exit {code} after {took:?}");
        assert_eq!(code, 69, "{what} on {host}: {err}");
        assert!(err.contains("coordination store"), "{err}");
        if host == "a" {
            assert!(err.contains("Connection refused"), "{err}");
        } else {
            assert!(err.contains("no answer within"), "{err}");
        }
        // Bounded by the start limit (10 s), far below the lease.
        assert!(took < Duration::from_secs(30), "{what} on {host}: {took:?}");
    }
    assert!(!site.s.path("pids/pc1").exists() && !site.s.path("pids/pc2").exists());

    // SIGTERM ends the wait for a silent store at once.
    let c = site.spawn("b", &["load", "pc3", "--image", "quick"]);
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    signal(c.id() as i32, Signal::TERM);
    let (code, _, err) = finish(c);
    let took = sent.elapsed();
    eprintln!("SIGTERM while the store is silent: exit {code} after {took:?}");
    assert_eq!(code, 143, "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn sigterm_ends_a_run_whose_store_hangs() {
    let pg = Pg::start("hang-term");
    let proxy = Proxy::to(pg.port);
    // Renewals every 5 s, each try 5 s, the watchdog at 15 s.
    let a = format!("url = \"{}\"\nlease = \"20s\"", proxy.url());
    let site = Site::hosts("site-hang-term", [Some(&a), None], "");
    let run = site.spawn("a", &["load", "pc1", "--image", "hold"]);
    let load = site.load_pid("pc1");
    let expires = || pg.psql("SELECT expires FROM reimage_holder WHERE computer = 'pc1'");
    let before = expires();
    assert!(
        eventually(Duration::from_secs(15), || expires() != before),
        "a did not renew its lease"
    );
    proxy.freeze();
    // The next renewal (5 s after the last) is under way, and has hung for
    // over a second: the give-back gets 2 s, not a whole try.
    std::thread::sleep(Duration::from_millis(6500));
    let sent = Instant::now();
    signal(run.id() as i32, Signal::TERM);
    let (code, _, err) = finish(run);
    let took = sent.elapsed();
    eprintln!("SIGTERM with the store hanging: exit {code} after {took:?}");
    assert_eq!(code, 143, "{err}");
    assert!(!alive(load));
    // Well before the watchdog's time (15 s after the last renewal, 8.5 s
    // after the signal): the run did not wait for the store.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM reimage_holder WHERE released IS NULL"),
        "1\n",
        "the store could not be told; the lease runs out by itself"
    );
    proxy.thaw();
}

/// The version 1 schema, as reimage 0.1.0 before the generation created
/// it.
const SCHEMA_V1: &str = "
CREATE TABLE reimage_schema (version integer NOT NULL);
CREATE TABLE reimage_holder (
    computer text PRIMARY KEY, token text NOT NULL, host text NOT NULL,
    pid integer NOT NULL, command text NOT NULL,
    started timestamptz NOT NULL, expires timestamptz NOT NULL);
CREATE TABLE reimage_slot (
    class text NOT NULL, slot integer NOT NULL, token text NOT NULL,
    computer text NOT NULL, host text NOT NULL, pid integer NOT NULL,
    label text NOT NULL DEFAULT '', taken timestamptz NOT NULL,
    expires timestamptz NOT NULL, PRIMARY KEY (class, slot));
INSERT INTO reimage_schema VALUES (1);
INSERT INTO reimage_holder VALUES
    ('pc1', 'old', 'node-x', 1, 'load --image quick --attempt 1',
     now() - interval '1 hour', now() - interval '1 minute');
";

#[test]
fn a_version_1_store_is_upgraded_in_place() {
    let pg = Pg::start("upgrade");
    pg.psql(SCHEMA_V1);
    let site = Site::new("site-upgrade", Some(&coordination(&pg, "10s")), "");
    let r = site.run("a", &["load", "pc1", "--image", "quick"]);
    r.code(0)
        .stderr_has("took over computer `pc1` as generation 2 in postgresql://reimage@127.0.0.1");
    assert_eq!(pg.psql("SELECT version FROM reimage_schema"), "2\n");
    assert_eq!(
        pg.psql(
            "SELECT host || ' ' || generation || ' ' || (released IS NOT NULL) FROM reimage_holder"
        ),
        "node-a 2 true\n"
    );
}
