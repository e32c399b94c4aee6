//! Issue 21.2: a load's whole process tree ends with it. The load command
//! double-forks daemons into sessions of their own (one of them with its
//! environment cleared, so reimage's marker is gone too); after the load
//! ends, times out, is interrupted, and after reimage is killed with
//! SIGKILL and the computer's next run, no process of the old load is
//! alive. The daemons are found by a marker in their argv. Each scenario
//! runs with each mechanism (`REIMAGE_PROCESS_TREE=cgroup`, which this
//! host delegates to root, and `=subreaper`).

use crate::common::{self, Scratch, command_config, eventually, of_kind};
use crate::test::Test;
use rustix::process::{Pid, Signal, kill_process};
use std::process::{Child, Stdio};

/// The two mechanisms.
const MECHANISMS: [&str; 2] = ["cgroup", "subreaper"];

/// The live processes whose command line holds `marker`.
fn with_marker(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&raw).contains(marker) && common::alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Kills what a failing test left behind.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in with_marker(&self.0) {
            if let Some(p) = Pid::from_raw(p) {
                let _ = kill_process(p, Signal::KILL);
            }
        }
    }
}

/// A load script that double-forks `daemons` into sessions of their own
/// (each a shell loop whose argv holds `marker-N`, the last one with its
/// environment cleared when `clean` is set), waits until they run, then
/// does `rest`.
fn load_script(s: &Scratch, marker: &str, clean: bool, rest: &str) -> String {
    let mut text = String::from("#!/bin/sh\n");
    let daemons = if clean { 2 } else { 1 };
    for i in 0..daemons {
        let pidf = s.path(&format!("{marker}-{i}.pid"));
        let _ = std::fs::remove_file(&pidf);
        let env = if i == 1 { "env -i " } else { "" };
        text.push_str(&format!(
            "{env}setsid sh -c 'sh -c \"echo \\$\\$ > {p}; while :; do sleep 1; done\" {marker}-{i} & exit 0' &\n",
            p = pidf.display()
        ));
        text.push_str(&format!(
            "while [ ! -s {p} ]; do sleep 0.05; done\n",
            p = pidf.display()
        ));
    }
    text.push_str(rest);
    text.push('\n');
    s.script("load.sh", &text);
    format!("[\"{}\"]", s.path("load.sh").display())
}

fn test<'a>(s: &'a Scratch, mechanism: &str) -> Test<'a> {
    Test::with(s)
        .load("pc7", "img")
        .attempt(1, 2)
        .env("REIMAGE_PROCESS_TREE", mechanism)
}

fn spawn(t: Test) -> Child {
    t.command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn reimage")
}

/// Waits until the load's `n` daemons run (wrote their pids).
#[track_caller]
fn daemons_run(s: &Scratch, marker: &str, n: usize) {
    let written = |i: usize| {
        std::fs::read_to_string(s.path(&format!("{marker}-{i}.pid")))
            .is_ok_and(|p| !p.trim().is_empty())
    };
    assert!(
        eventually(common::LIMIT, || (0..n).all(written)),
        "the load's daemons never ran"
    );
}

/// The events say which mechanism holds the tree.
#[track_caller]
fn says_mechanism(s: &Scratch, mechanism: &str) {
    let ev = s.events("pc7");
    let said = of_kind(&ev, "info")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.starts_with("process tree: "))
        .map(str::to_string)
        .expect("an event names the mechanism");
    match mechanism {
        "cgroup" => assert!(said.contains("in cgroup /sys/fs/cgroup"), "{said}"),
        _ => assert!(said.contains("REIMAGE_PROCESS_TREE=subreaper"), "{said}"),
    }
}

/// The load ends (exit 0) and leaves daemons: they end with it.
#[test]
fn daemons_end_when_their_load_ends() {
    for m in MECHANISMS {
        let s = Scratch::new("tree-end");
        let marker = format!("tree-end-{m}-{}", std::process::id());
        let _c = Cleanup(marker.clone());
        command_config(&s, &load_script(&s, &marker, true, "exit 0"), "5m", "");
        test(&s, m).run().code(0);
        assert_eq!(with_marker(&marker), Vec::<i32>::new(), "{m}");
        says_mechanism(&s, m);
    }
}

/// The load runs past its timeout: it and its daemons are killed.
#[test]
fn daemons_end_when_their_load_times_out() {
    for m in MECHANISMS {
        let s = Scratch::new("tree-timeout");
        let marker = format!("tree-timeout-{m}-{}", std::process::id());
        let _c = Cleanup(marker.clone());
        command_config(
            &s,
            &load_script(&s, &marker, true, "exec sleep 300"),
            "3s",
            "",
        );
        test(&s, m)
            .run()
            .code(75)
            .stderr_has("ran past its timeout of 3s");
        assert_eq!(with_marker(&marker), Vec::<i32>::new(), "{m}");
    }
}

/// SIGTERM while the load runs: it and its daemons are killed, exit 143.
#[test]
fn daemons_end_when_the_run_is_interrupted() {
    for m in MECHANISMS {
        let s = Scratch::new("tree-term");
        let marker = format!("tree-term-{m}-{}", std::process::id());
        let _c = Cleanup(marker.clone());
        command_config(
            &s,
            &load_script(&s, &marker, true, "exec sleep 300"),
            "10m",
            "",
        );
        let mut child = spawn(test(&s, m));
        daemons_run(&s, &marker, 2);
        kill_process(Pid::from_child(&child), Signal::TERM).expect("SIGTERM");
        assert_eq!(common::wait_limit(&mut child, common::LIMIT), Some(143));
        assert_eq!(with_marker(&marker), Vec::<i32>::new(), "{m}");
    }
}

/// SIGKILL of reimage while the load runs: the load command dies with it
/// (PR_SET_PDEATHSIG), its daemons do not (nothing is left to kill them).
/// The computer's next run ends them before it loads (its load command
/// finds none), and says so in a warning. Where no cgroup holds the tree,
/// a daemon that cleared its environment is out of reach once reimage is
/// gone: that run's load leaves only a marked one.
#[test]
fn the_next_run_ends_what_a_killed_run_left() {
    for m in MECHANISMS {
        let s = Scratch::new("tree-kill");
        let marker = format!("tree-kill-{m}-{}", std::process::id());
        let _c = Cleanup(marker.clone());
        let clean = m == "cgroup";
        let load = load_script(&s, &marker, clean, "exec sleep 300");
        command_config(&s, &load, "10m", "");
        let mut child = spawn(test(&s, m));
        daemons_run(&s, &marker, if clean { 2 } else { 1 });
        kill_process(Pid::from_child(&child), Signal::KILL).expect("SIGKILL");
        let _ = child.wait();
        assert!(
            !with_marker(&marker).is_empty(),
            "{m}: the daemons died with reimage (this test would prove nothing)"
        );
        // The next run's load fails if any of them still lives.
        let check = format!(
            r#"["sh", "-c", "if pgrep -f '{}-[0-9]'; then exit 1; fi"]"#,
            marker.replace("tree-", "tree[-]")
        );
        command_config(&s, &check, "1m", "");
        let r = test(&s, m).run();
        r.code(0);
        assert_eq!(with_marker(&marker), Vec::<i32>::new(), "{m}");
        let ev = r.events();
        let warned = of_kind(&ev, "warn")
            .iter()
            .filter_map(|e| e["message"].as_str())
            .any(|w| w.contains("before it ended its commands' processes; ended"));
        assert!(warned, "{m}: {:?}", of_kind(&ev, "warn"));
        // And the run after that finds nothing left to end.
        let r = test(&s, m).run();
        r.code(0);
        let ended = r
            .events()
            .iter()
            .rev()
            .take_while(|e| e["kind"] != "start")
            .any(|e| {
                e["message"].as_str().is_some_and(|w| w.contains("ended")) && e["kind"] == "warn"
            });
        assert!(!ended, "{m}");
    }
}

/// An earlier run of the computer whose process still runs (same pid and
/// start time in its record) keeps the next run out, though it does not
/// hold the lock: exit 73, naming it, and nothing is loaded.
#[test]
fn a_still_running_earlier_run_keeps_the_next_one_out() {
    let s = Scratch::new("tree-alive");
    command_config(&s, r#"["true"]"#, "1m", "");
    Test::with(&s)
        .load("pc7", "img")
        .attempt(1, 2)
        .run()
        .code(0);
    // A record of a run that still runs (the test itself stands in: its
    // pid and start time), which does not hold the lock.
    let me = std::process::id();
    let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).expect("stat");
    let start: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(19))
        .and_then(|t| t.parse().ok())
        .expect("start time");
    let rec = serde_json::json!({
        "pid": me, "pid_start": start, "marker": format!("{me}.{start}"),
        "started": "2026-01-01T00:00:00.000Z",
    });
    s.write("state/computers/pc7/tree.json", &rec.to_string());
    let r = Test::with(&s).load("pc7", "img").attempt(1, 2).run();
    r.code(73).stderr_has(&format!(
        "(pid {me}, started 2026-01-01T00:00:00.000Z) still runs"
    ));
}

/// A value of REIMAGE_PROCESS_TREE that is none of the three is a usage
/// error, not a silent default.
#[test]
fn an_unknown_mechanism_is_a_usage_error() {
    let s = Scratch::new("tree-usage");
    command_config(&s, r#"["true"]"#, "1m", "");
    test(&s, "cgroups")
        .run()
        .code(64)
        .stderr_has("REIMAGE_PROCESS_TREE is \"cgroups\": set it to auto, cgroup or subreaper");
}

/// This process's cgroup v2 directory (reimage's, when the test runs it).
fn own_cgroup() -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mount = info
        .lines()
        .find_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            (tail.split_whitespace().next()? == "cgroup2")
                .then(|| head.split_whitespace().nth(4).map(str::to_string))?
        })
        .expect("a cgroup v2 mount");
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    std::path::Path::new(&mount).join(rel.trim_start_matches('/'))
}

/// A pid no process has now.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().expect("true");
    let pid = c.id();
    let _ = c.wait();
    pid
}

/// Runs killed with SIGKILL leave their cgroups beside reimage: a run in
/// cgroup mode removes the empty ones and leaves one that still holds a
/// process (for its computer's next run to end and report).
#[test]
fn empty_cgroups_of_killed_runs_are_removed() {
    let s = Scratch::new("tree-stale");
    command_config(&s, r#"["true"]"#, "1m", "");
    let own = own_cgroup();
    let empty = own.join(format!("reimage-gone-{}", dead_pid()));
    std::fs::create_dir_all(empty.join("c1")).expect("an empty stale cgroup");
    let busy = own.join(format!("reimage-busy-{}", dead_pid()));
    std::fs::create_dir_all(busy.join("c1")).expect("a busy stale cgroup");
    let mut sleeper = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("sleep");
    std::fs::write(busy.join("c1/cgroup.procs"), sleeper.id().to_string()).expect("join");
    let r = test(&s, "cgroup").run();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let busy_stayed = busy.join("c1").exists();
    let _ = std::fs::remove_dir(busy.join("c1"));
    let _ = std::fs::remove_dir(&busy);
    r.code(0);
    assert!(!empty.exists(), "{} left", empty.display());
    assert!(busy_stayed, "a cgroup with a process in it was removed");
}
