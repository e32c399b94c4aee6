//! The core contract over the built binary: exit codes, the attempt loop,
//! placeholders, timeouts that grow, stall timeouts, locking, signals,
//! configuration errors and JSON events. Load steps use the `command`
//! provisioner with small shell scripts; waits use real TCP listeners.

mod common;

use common::{Scratch, alive, eventually, free_port, of_kind, run};
use rustix::process::{Pid, Signal, kill_process};
use std::net::TcpListener;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A config whose `script` provisioner runs `load.sh` and whose OS profile
/// waits for nothing (or for `steps`).
fn setup(name: &str, load_sh: &str, steps: &str) -> Scratch {
    let s = Scratch::new(name);
    let load = s.script("load.sh", load_sh);
    s.config(&format!(
        r#"max_attempts = 3

[provisioners.script]
kind = "command"
load = ["{load}", "{{node}}", "{{source}}", "{{attempt}}", "{{attempts}}", "{{reservation}}", "{{computer}}", "{{address}}", "{{image}}"]
timeout = "20s"

[os.appliance]
family = "generic"
channel = "none"
steps = [{steps}]

[images.centos7]
os = "appliance"
provisioner = "script"
source = "centos7-x86_64"

[computers.pc7]
address = "127.0.0.1"
node = "pc7-bmc"
"#,
        load = load.display()
    ));
    s
}

const OK: &str = "#!/bin/sh\nexit 0\n";

#[test]
fn version_and_usage_errors() {
    let s = setup("usage", OK, "");
    let r = run(s.reimage(&["--version"]).env_clear(), LIMIT);
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("reimage "), "{}", r.stdout);
    let r = run(
        &mut s.reimage(&["provision", "pc7", "--image", "centos7", "--bogus"]),
        LIMIT,
    );
    assert_eq!(r.code, 64, "unknown flag: {r:?}");
    let r = run(
        &mut s.reimage(&["provision", "pc99", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 64, "unknown computer: {r:?}");
    assert!(
        r.stderr.contains("unknown computer `pc99`") && r.stderr.contains("pc7"),
        "{}",
        r.stderr
    );
    let r = run(&mut s.reimage(&["load", "pc7", "--image", "nope"]), LIMIT);
    assert_eq!(r.code, 64, "unknown image: {r:?}");
    assert!(r.stderr.contains("unknown image `nope`"), "{}", r.stderr);
}

#[test]
fn the_issue_config_shape_works_as_written() {
    let s = Scratch::new("shape");
    let cfg = s.write(
        "reimage.toml",
        &format!(
            r#"state_dir = "{}"
max_attempts = 3

[provisioners.script]
kind = "command"
load = ["/usr/local/libexec/reload-node", "{{node}}", "{{source}}"]
timeout = "30m"

[os.appliance]
family = "generic"
channel = "none"
steps = [ {{ wait = "port", port = 22, timeout = "10m" }} ]

[images.centos7]
os = "appliance"
provisioner = "script"
source = "centos7-x86_64"
max_attempts = 2

[computers.pc7]
address = "10.1.0.7"
node = "pc7-bmc"
"#,
            s.path("state").display()
        ),
    );
    let r = run(&mut s.reimage(&["check"]), LIMIT);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&cfg.display().to_string()) && r.stdout.contains("OK"));
    let r = run(
        &mut s.reimage(&["check", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("load command: /usr/local/libexec/reload-node pc7-bmc centos7-x86_64"),
        "{}",
        r.stdout
    );
    // max_attempts = 2 on the image, growth 1.5: 30m then 45m.
    assert!(
        r.stdout.contains("load timeout: 30m, 45m\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("1. port [port] port 22: timeout 10m, 15m"),
        "{}",
        r.stdout
    );
}

#[test]
fn config_errors_name_file_line_and_column() {
    let s = setup("cfgerr", OK, "");
    let cfg = s.path("reimage.toml");
    let cases: &[(&str, &str, &str)] = &[
        ("bogus_key = 1\n", ":2:1:", "unknown field `bogus_key`"),
        ("max_attempts = \"three\"\n", ":2:16:", "invalid type"),
    ];
    for (extra, at, msg) in cases {
        let text = std::fs::read_to_string(&cfg).expect("config");
        let state_line = text.lines().next().expect("state line").to_string();
        let rest: String = text
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("max_attempts"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&cfg, format!("{state_line}\n{extra}{rest}")).expect("write");
        let r = run(&mut s.reimage(&["check"]), LIMIT);
        assert_eq!(r.code, 78, "{extra}: {r:?}");
        let want = format!("{}{at}", cfg.display());
        assert!(
            r.stderr.contains(&want),
            "{extra}: wanted `{want}` in {}",
            r.stderr
        );
        assert!(
            r.stderr.contains(msg),
            "{extra}: wanted `{msg}` in {}",
            r.stderr
        );
        std::fs::write(&cfg, &text).expect("restore");
    }
    // An unknown key inside a provisioner table points at that key.
    let text = std::fs::read_to_string(&cfg).expect("config");
    // `check` on the config with one edit.
    let check_with = |edited: String| {
        std::fs::write(&cfg, edited).expect("write");
        run(&mut s.reimage(&["check"]), LIMIT)
    };
    let r = check_with(text.replace("timeout = \"20s\"", "timeout = \"20s\"\nretries = 4"));
    assert_eq!(r.code, 78, "{r:?}");
    assert!(
        r.stderr.contains(&format!("{}:8:1:", cfg.display())),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("retries"), "{}", r.stderr);
    // An image naming a missing OS profile.
    let r = check_with(text.replace("os = \"appliance\"", "os = \"solaris\""));
    assert_eq!(r.code, 78, "{r:?}");
    assert!(
        r.stderr.contains(":15:1:") && r.stderr.contains("`solaris`"),
        "{}",
        r.stderr
    );
    // A missing provisioner.
    let r = check_with(text.replace("provisioner = \"script\"", "provisioner = \"maas\""));
    assert_eq!(r.code, 78, "{r:?}");
    assert!(
        r.stderr.contains(":16:1:") && r.stderr.contains("`maas`"),
        "{}",
        r.stderr
    );
    // A bad duration.
    let r = check_with(text.replace("timeout = \"20s\"", "timeout = \"ten minutes\""));
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("ten minutes"), "{}", r.stderr);
    // Durations too long for a deadline are config errors, not a panic.
    for long in ["\"99999999999999999999h\"", "\"1e20\"", "1e20"] {
        let r = check_with(text.replace("timeout = \"20s\"", &format!("timeout = {long}")));
        assert_eq!(r.code, 78, "{long}: {r:?}");
        assert!(r.stderr.contains("longer than"), "{long}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{long}: {}", r.stderr);
    }
    // A step name in `timeouts` that the profile does not have: plain
    // `check` resolves every image's profile and finds it.
    let r = check_with(text.replace(
        "channel = \"none\"",
        "channel = \"none\"\ntimeouts = { login = \"5m\" }",
    ));
    assert_eq!(r.code, 78, "{r:?}");
    assert!(
        r.stderr.contains(":12:14:") && r.stderr.contains("no step `login`"),
        "{}",
        r.stderr
    );
    // A missing file.
    let r = run(
        std::process::Command::new(common::bin()).args([
            "--config",
            "/nonexistent/reimage.toml",
            "check",
        ]),
        LIMIT,
    );
    assert_eq!(r.code, 78, "{r:?}");
}

#[test]
fn load_retry_then_success() {
    let s = setup(
        "retry",
        "#!/bin/sh\n[ \"$3\" = 1 ] && exit 75\nexit 0\n",
        "",
    );
    let r = run(
        &mut s.reimage(&["provision", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let ev = s.events("pc7");
    let attempts: Vec<_> = of_kind(&ev, "attempt")
        .iter()
        .map(|e| e["attempt"].as_u64())
        .collect();
    assert_eq!(attempts, vec![Some(1), Some(2)]);
    let results: Vec<(String, String)> = of_kind(&ev, "result")
        .iter()
        .map(|e| {
            (
                e["phase"].as_str().unwrap_or("").to_string(),
                e["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        vec![
            ("load".into(), "retry".into()),
            ("load".into(), "done".into()),
            ("post-load".into(), "done".into())
        ]
    );
    let last: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("state/computers/pc7/last-run.json")).expect("last run"),
    )
    .expect("json");
    assert_eq!(last["attempt"], 2);
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["phase"], "post-load");
}

#[test]
fn post_load_retry_reloads() {
    // The port opens only once attempt 2's load has run.
    let port = free_port();
    let load = format!(
        "#!/bin/sh\nif [ \"$3\" = 2 ]; then setsid python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\",{port})); s.listen(); time.sleep(20)' >/dev/null 2>&1 & while ! python3 -c 'import socket; socket.create_connection((\"127.0.0.1\",{port}))' 2>/dev/null; do sleep 0.05; done; fi\nexit 0\n"
    );
    let s = setup(
        "postretry",
        &load,
        &format!("{{ wait = \"port\", port = {port}, timeout = \"1s\" }}"),
    );
    let r = run(
        &mut s.reimage(&["provision", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let ev = s.events("pc7");
    let results: Vec<String> = of_kind(&ev, "result")
        .iter()
        .map(|e| format!("{}:{}:{}", e["attempt"], e["phase"], e["result"]))
        .collect();
    assert_eq!(
        results,
        vec![
            "1:\"load\":\"done\"",
            "1:\"post-load\":\"retry\"",
            "2:\"load\":\"done\"",
            "2:\"post-load\":\"done\""
        ]
    );
}

#[test]
fn fatal_stops_at_once() {
    let s = setup("fatal", "#!/bin/sh\necho 'no such image' >&2\nexit 1\n", "");
    let r = run(
        &mut s.reimage(&["provision", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no such image"), "{}", r.stderr);
    let ev = s.events("pc7");
    assert_eq!(
        of_kind(&ev, "attempt").len(),
        1,
        "no second attempt after fatal"
    );
    assert!(
        !ev.iter().any(|e| e["phase"] == "post-load"),
        "post-load must not run"
    );
}

#[test]
fn attempts_spent_is_fatal() {
    let s = setup("spent", "#!/bin/sh\nexit 75\n", "");
    let r = run(
        &mut s.reimage(&["provision", "pc7", "--image", "centos7", "--attempts", "2"]),
        LIMIT,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("attempts spent"), "{}", r.stderr);
    assert_eq!(of_kind(&s.events("pc7"), "attempt").len(), 2);
    // A single step with a retry exits 75.
    let r = run(
        &mut s.reimage(&["load", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 75, "{r:?}");
}

#[test]
fn placeholders_and_environment_reach_the_command() {
    let s = Scratch::new("ph-out");
    let out = s.path("seen");
    let load = format!(
        "#!/bin/sh\n{{ echo \"args=$*\"; env | grep '^REIMAGE_' | sort; }} > {}\nexit 0\n",
        out.display()
    );
    let s2 = setup("ph", &load, "");
    let r = run(
        &mut s2.reimage(&[
            "load",
            "pc7",
            "--image",
            "centos7",
            "--attempt",
            "2",
            "--of",
            "3",
            "--reservation",
            "4711",
        ]),
        LIMIT,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let seen = std::fs::read_to_string(&out).expect("load ran");
    assert!(
        seen.contains("args=pc7-bmc centos7-x86_64 2 3 4711 pc7 127.0.0.1 centos7\n"),
        "{seen}"
    );
    for kv in [
        "REIMAGE_ATTEMPT=2",
        "REIMAGE_ATTEMPTS=3",
        "REIMAGE_NODE=pc7-bmc",
        "REIMAGE_SOURCE=centos7-x86_64",
        "REIMAGE_RESERVATION=4711",
        "REIMAGE_COMPUTER=pc7",
        "REIMAGE_ADDRESS=127.0.0.1",
        "REIMAGE_IMAGE=centos7",
    ] {
        assert!(seen.lines().any(|l| l == kv), "{kv} missing in {seen}");
    }
}

#[test]
fn timeouts_grow_with_the_attempt() {
    // 1 s at attempt 1, 2 s at attempt 2 (growth 2): a 1.4 s load only fits
    // the second.
    let s = setup("grow", "#!/bin/sh\nsleep 1.4\nexit 0\n", "");
    let cfg = s.path("reimage.toml");
    let text = std::fs::read_to_string(&cfg).expect("cfg");
    std::fs::write(
        &cfg,
        text.replace("timeout = \"20s\"", "timeout = \"1s\"")
            .replace("max_attempts = 3", "max_attempts = 3\ntimeout_growth = 2.0"),
    )
    .expect("write");
    let r = run(
        &mut s.reimage(&[
            "load",
            "pc7",
            "--image",
            "centos7",
            "--attempt",
            "1",
            "--of",
            "3",
        ]),
        LIMIT,
    );
    assert_eq!(r.code, 75, "{r:?}");
    assert!(
        r.stderr.contains("ran past its timeout of 1s"),
        "{}",
        r.stderr
    );
    let r = run(
        &mut s.reimage(&[
            "load",
            "pc7",
            "--image",
            "centos7",
            "--attempt",
            "2",
            "--of",
            "3",
        ]),
        LIMIT,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(
        &mut s.reimage(&["check", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert!(
        r.stdout.contains("load timeout: 1s, 2s, 4s"),
        "{}",
        r.stdout
    );
}

#[test]
fn wait_timeout_is_retry_then_fatal_on_the_last_attempt() {
    let port = free_port();
    let s = setup(
        "waitfatal",
        OK,
        &format!("{{ wait = \"port\", port = {port}, timeout = \"300ms\" }}"),
    );
    let r = run(
        &mut s.reimage(&[
            "post-load",
            "pc7",
            "--image",
            "centos7",
            "--attempt",
            "1",
            "--of",
            "3",
        ]),
        LIMIT,
    );
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("connection refused"), "{}", r.stderr);
    let r = run(
        &mut s.reimage(&[
            "post-load",
            "pc7",
            "--image",
            "centos7",
            "--attempt",
            "3",
            "--of",
            "3",
        ]),
        LIMIT,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no attempts left"), "{}", r.stderr);
}

#[test]
fn stall_timeout_gives_up_before_the_timeout() {
    let port = free_port();
    let s = setup(
        "stall",
        OK,
        &format!(
            "{{ wait = \"port\", port = {port}, timeout = \"60s\", stall_timeout = \"700ms\" }}"
        ),
    );
    let r = run(
        &mut s.reimage(&["post-load", "pc7", "--image", "centos7", "--of", "3"]),
        LIMIT,
    );
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("no change for 700ms"), "{}", r.stderr);
    assert!(
        r.took < Duration::from_secs(10),
        "stalled wait took {:?}",
        r.took
    );
}

#[test]
fn banner_step_matches_the_first_line() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
        }
    });
    let s = setup(
        "banner",
        OK,
        &format!(
            "{{ wait = \"banner\", port = {port}, regex = \"^SSH-2\\\\.0-\", timeout = \"5s\" }}"
        ),
    );
    let r = run(
        &mut s.reimage(&["post-load", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let s = setup(
        "banner2",
        OK,
        &format!("{{ wait = \"banner\", port = {port}, regex = \"^HTTP\", timeout = \"500ms\" }}"),
    );
    let r = run(
        &mut s.reimage(&["post-load", "pc7", "--image", "centos7", "--of", "2"]),
        LIMIT,
    );
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("does not match"), "{}", r.stderr);
}

#[test]
fn a_second_run_on_a_locked_computer_exits_73() {
    let s = setup("lock", "#!/bin/sh\nsleep 5\nexit 0\n", "");
    let mut first = s
        .reimage(&["load", "pc7", "--image", "centos7"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let lock = s.path("state/computers/pc7/lock");
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&lock).is_ok_and(|p| !p.is_empty())
    }));
    let r = run(
        &mut s.reimage(&["load", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 73, "{r:?}");
    assert!(
        r.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        r.stderr
    );
    assert!(
        r.took < Duration::from_secs(2),
        "lock contention must answer at once, took {:?}",
        r.took
    );
    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn sigterm_during_load_kills_the_child_and_frees_the_lock() {
    let s = Scratch::new("term-pid");
    let pidf = s.path("child.pid");
    let load = format!("#!/bin/sh\necho $$ > {}\nsleep 30 & wait\n", pidf.display());
    let t = setup("term", &load, "");
    let mut child = t
        .reimage(&["provision", "pc7", "--image", "centos7"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&pidf).is_ok_and(|p| !p.trim().is_empty())
    }));
    let script_pid: i32 = std::fs::read_to_string(&pidf)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid number");
    kill_process(Pid::from_child(&child), Signal::TERM).expect("SIGTERM to reimage");
    let code = common::wait_limit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(143));
    assert!(
        eventually(Duration::from_secs(3), || !alive(script_pid)),
        "load command {script_pid} survived"
    );
    let ev = t.events("pc7");
    let last = ev.last().expect("events");
    assert_eq!(last["kind"], "run");
    assert_eq!(last["code"], 143);
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.path("state/computers/pc7/last-run.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(rec["result"], "interrupted");
    // The lock is free: a quick run takes it.
    std::fs::write(t.path("load.sh"), OK).expect("rewrite load");
    let r = run(
        &mut t.reimage(&["load", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn json_events_carry_attempt_phase_step_and_result() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let s = setup(
        "json",
        OK,
        &format!("{{ wait = \"port\", port = {port}, timeout = \"5s\" }}"),
    );
    let r = run(
        &mut s.reimage(&[
            "--json",
            "provision",
            "pc7",
            "--image",
            "centos7",
            "--reservation",
            "77",
        ]),
        LIMIT,
    );
    drop(l);
    assert_eq!(r.code, 0, "{r:?}");
    let ev: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is a JSON event"))
        .collect();
    assert!(
        ev.iter()
            .all(|e| e["computer"] == "pc7" && e["image"] == "centos7" && e["reservation"] == "77")
    );
    let step = ev
        .iter()
        .find(|e| e["kind"] == "step-end")
        .expect("a step-end event");
    assert_eq!(step["attempt"], 1);
    assert_eq!(step["of"], 3);
    assert_eq!(step["phase"], "post-load");
    assert_eq!(step["step"], "port");
    assert_eq!(step["result"], "ok");
    let res: Vec<&serde_json::Value> = of_kind(&ev, "result");
    assert_eq!(
        res.last().map(|e| e["result"].clone()),
        Some(serde_json::json!("done"))
    );
    assert_eq!(
        ev.last().map(|e| e["code"].clone()),
        Some(serde_json::json!(0))
    );
    // The event log has the same events.
    assert_eq!(s.events("pc7").len(), ev.len());
    assert!(
        r.stderr.is_empty(),
        "--json keeps stderr quiet: {}",
        r.stderr
    );
}

#[test]
fn a_port_that_opens_late_is_seen_soon_after() {
    let port = free_port();
    let s = setup(
        "late",
        OK,
        &format!("{{ wait = \"port\", port = {port}, timeout = \"20s\" }}"),
    );
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind late");
        let at = std::time::Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        drop(l);
        at
    });
    let start = std::time::Instant::now();
    let r = run(
        &mut s.reimage(&["post-load", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    let done = std::time::Instant::now();
    let opened = opener.join().expect("opener");
    assert_eq!(r.code, 0, "{r:?}");
    let lag = done.duration_since(opened);
    eprintln!(
        "port opened {:?} after start; reimage exited {lag:?} after it opened",
        opened.duration_since(start)
    );
    assert!(
        lag < Duration::from_secs(1),
        "ready seen {lag:?} after the port opened"
    );
}

#[test]
fn a_terminal_gets_a_spinner_with_step_attempt_and_time_left() {
    // `script` gives reimage a pseudo-terminal for stderr.
    let port = free_port();
    let s = setup(
        "tty",
        OK,
        &format!("{{ wait = \"port\", port = {port}, timeout = \"1s\" }}"),
    );
    let line = format!(
        "{} --config {} post-load pc7 --image centos7 --of 2",
        common::bin().display(),
        s.path("reimage.toml").display()
    );
    let r = run(
        std::process::Command::new("script").args(["-qec", &line, "/dev/null"]),
        LIMIT,
    );
    assert_eq!(r.code, 75, "{r:?}");
    assert!(
        r.stdout.contains("[1/2] pc7 post-load · port 0:0"),
        "no spinner line: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("left)"),
        "no time left shown: {}",
        r.stdout
    );
    assert!(r.stdout.contains("connection refused"), "{}", r.stdout);
    // Without a terminal: plain lines only, no spinner.
    let r = run(
        &mut s.reimage(&["post-load", "pc7", "--image", "centos7", "--of", "2"]),
        LIMIT,
    );
    assert!(
        !r.stderr.contains("left)") && !r.stderr.contains('\r'),
        "{}",
        r.stderr
    );
}

#[test]
fn ping_and_sleep_steps() {
    let s = setup(
        "pingsleep",
        OK,
        r#"{ wait = "sleep", name = "settle", duration = "400ms" }, { wait = "ping", timeout = "10s" }"#,
    );
    let r = run(
        &mut s.reimage(&["post-load", "pc7", "--image", "centos7"]),
        LIMIT,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let ev = s.events("pc7");
    let ends = of_kind(&ev, "step-end");
    let settle = ends
        .iter()
        .find(|e| e["step"] == "settle")
        .expect("sleep step");
    assert!(
        settle["elapsed_ms"].as_u64().unwrap_or(0) >= 400,
        "{settle}"
    );
    let ping = ends
        .iter()
        .find(|e| e["step"] == "ping")
        .expect("ping step");
    assert_eq!(ping["result"], "ok");
    assert!(
        ping["message"]
            .as_str()
            .unwrap_or("")
            .contains("answers ping"),
        "{ping}"
    );
}
