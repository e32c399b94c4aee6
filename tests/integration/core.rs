//! The core contract over the built binary: exit codes, the attempt loop,
//! placeholders, timeouts that grow, stall timeouts, locking, signals,
//! configuration errors and JSON events. Load steps use the `command`
//! provisioner with small shell scripts; waits use real TCP listeners.

use crate::common;
use crate::test::{Test, run};
use common::{LIMIT, Scratch, alive, eventually, of_kind};
use rustix::process::{Pid, Signal, kill_process};
use std::net::TcpListener;
use std::time::Duration;
use testbed::port::{self, Port};

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
    let r = run(
        Test::with(&s).args(&["--version"]).command().env_clear(),
        LIMIT,
    );
    r.code(0);
    assert!(r.stdout.starts_with("reimage "), "{}", r.stdout);
    let r = Test::with(&s)
        .provision("pc7", "centos7")
        .args(&["--bogus"])
        .run();
    r.code(64); // unknown flag
    let r = Test::with(&s).provision("pc99", "centos7").run();
    r.code(64); // unknown computer
    assert!(
        r.stderr.contains("unknown computer `pc99`") && r.stderr.contains("pc7"),
        "{}",
        r.stderr
    );
    let r = Test::with(&s).load("pc7", "nope").run();
    r.code(64); // unknown image
    r.stderr_has("unknown image `nope`");
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
load = ["{}", "{{node}}", "{{source}}"]
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
            s.path("state").display(),
            s.path("reload-node").display()
        ),
    );
    // The load command is not there yet: check says so at its line.
    let r = Test::with(&s).args(&["check"]).run();
    r.code(78)
        .stderr_has("reimage.toml:6:1:")
        .stderr_has("reload-node: no such file");
    s.script("reload-node", "#!/bin/sh\nexit 0\n");
    let r = Test::with(&s).args(&["check"]).run();
    r.code(0);
    assert!(r.stdout.contains(&cfg.display().to_string()) && r.stdout.contains("OK"));
    let r = Test::with(&s).check("pc7", "centos7").run();
    r.code(0);
    assert!(
        r.stdout.contains(&format!(
            "load command: {} pc7-bmc centos7-x86_64",
            s.path("reload-node").display()
        )),
        "{}",
        r.stdout
    );
    // max_attempts = 2 on the image, growth 1.5: 30m then 45m.
    r.stdout_has("load timeout: 30m, 45m\n");
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
        let r = Test::with(&s).args(&["check"]).run();
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
        Test::with(&s).args(&["check"]).run()
    };
    let r = check_with(text.replace("timeout = \"20s\"", "timeout = \"20s\"\nretries = 4"));
    r.code(78);
    assert!(
        r.stderr.contains(&format!("{}:8:1:", cfg.display())),
        "{}",
        r.stderr
    );
    r.stderr_has("retries");
    // An image naming a missing OS profile.
    let r = check_with(text.replace("os = \"appliance\"", "os = \"solaris\""));
    r.code(78);
    assert!(
        r.stderr.contains(":15:1:") && r.stderr.contains("`solaris`"),
        "{}",
        r.stderr
    );
    // A missing provisioner.
    let r = check_with(text.replace("provisioner = \"script\"", "provisioner = \"maas\""));
    r.code(78);
    assert!(
        r.stderr.contains(":16:1:") && r.stderr.contains("`maas`"),
        "{}",
        r.stderr
    );
    // A bad duration.
    let r = check_with(text.replace("timeout = \"20s\"", "timeout = \"ten minutes\""));
    r.code(78);
    r.stderr_has("ten minutes");
    // Durations too long for a deadline are config errors, not a panic.
    for long in ["\"99999999999999999999h\"", "\"1e20\"", "1e20"] {
        let r = check_with(text.replace("timeout = \"20s\"", &format!("timeout = {long}")));
        r.code(78);
        r.stderr_has("longer than");
        r.stderr_lacks("panicked");
    }
    // A step name in `timeouts` that the profile does not have: plain
    // `check` resolves every image's profile and finds it.
    let r = check_with(text.replace(
        "channel = \"none\"",
        "channel = \"none\"\ntimeouts = { login = \"5m\" }",
    ));
    r.code(78);
    assert!(
        r.stderr.contains(":12:14:") && r.stderr.contains("no step `login`"),
        "{}",
        r.stderr
    );
    // A missing file.
    Test::with(&s)
        .no_config_flag()
        .args(&["--config", "/nonexistent/reimage.toml", "check"])
        .run()
        .code(78);
}

/// Each wait kind takes its own keys: a step table is checked once, when
/// the config loads, and the error points at the key.
#[test]
fn step_tables_are_checked_by_their_kind() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{ wait = "port", port = 1, regex = "^x" }"#,
            "regex",
            "a `port` step takes no `regex`",
        ),
        (
            r#"{ wait = "sleep", duration = "1s", stall_timeout = "1s" }"#,
            "stall_timeout",
            "a `sleep` step takes no `stall_timeout`",
        ),
        (
            r#"{ wait = "banner", port = 1 }"#,
            "wait",
            "a `banner` step needs regex",
        ),
        (
            r#"{ wait = "banner", port = 1, regex = "(" }"#,
            "regex",
            "not a valid regex",
        ),
        (
            r#"{ wait = "command", command = [] }"#,
            "wait",
            "a `command` step needs command",
        ),
        (
            r#"{ wait = "port", port = 1 }, { wait = "login" }"#,
            "wait = \"login",
            "a `login` step needs channel",
        ),
    ];
    for (i, (steps, key, msg)) in cases.iter().enumerate() {
        let s = setup(&format!("steps{i}"), OK, steps);
        let cfg = s.path("reimage.toml");
        let text = std::fs::read_to_string(&cfg).expect("config");
        let line = text.lines().nth(11).expect("steps line");
        assert!(line.starts_with("steps = "), "{line}");
        let col = line.find(key).expect("key in line") + 1;
        let r = Test::with(&s).args(&["check"]).run();
        assert_eq!(r.code, 78, "{steps}: {r:?}");
        let want = format!("{}:12:{col}:", cfg.display());
        assert!(
            r.stderr.contains(&want) && r.stderr.contains(msg),
            "{steps}: wanted `{want}` and `{msg}` in {}",
            r.stderr
        );
    }
    // A built-in sequence that logs in needs a channel as well.
    let s = setup("steps-builtin", OK, "");
    let cfg = s.path("reimage.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace("family = \"generic\"", "family = \"linux\"")
            .replace("steps = []\n", ""),
    )
    .expect("write");
    let r = Test::with(&s).args(&["check"]).run();
    assert_eq!(r.code, 78, "{r:?}");
    assert!(
        r.stderr.contains(&format!("{}:11:1:", cfg.display()))
            && r.stderr.contains("a `login` step needs channel"),
        "{}",
        r.stderr
    );
}

/// Each channel has its own settings: a key of another channel would be
/// ignored, so it is refused where it stands.
#[test]
fn keys_of_another_channel_are_refused() {
    let s = setup("chankeys", OK, "");
    let cfg = s.path("reimage.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let cases = [
        (
            "channel = \"winrm\"\nkey_file = \"/k\"",
            "`key_file` is a setting of channel ssh",
        ),
        (
            "channel = \"ssh\"\nhttps = true",
            "`https` is a setting of channel winrm",
        ),
        (
            "channel = \"none\"\nca_file = \"/ca.pem\"",
            "`ca_file` is a setting of channel winrm",
        ),
        (
            "channel = \"none\"\nuser = \"root\"",
            "channel none, which logs in nowhere",
        ),
    ];
    for (keys, msg) in cases {
        std::fs::write(&cfg, text.replace("channel = \"none\"", keys)).expect("write");
        let r = Test::with(&s).args(&["check"]).run();
        assert_eq!(r.code, 78, "{keys}: {r:?}");
        assert!(
            r.stderr.contains(&format!("{}:12:1:", cfg.display())) && r.stderr.contains(msg),
            "{keys}: wanted `{msg}` at line 12 in {}",
            r.stderr
        );
    }
    std::fs::write(
        &cfg,
        text.replace(
            "channel = \"none\"",
            "channel = \"winrm\"\nhttps = true\nuser = \"a\"",
        )
        .replace("steps = []\n", ""),
    )
    .expect("write");
    let r = Test::with(&s)
        .args(&["check", "pc7", "--image", "centos7"])
        .run();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("login: a@127.0.0.1:5986"), "{}", r.stdout);
}

/// A port step that names no port probes the channel's; with channel none
/// that is the computer's `port`, and without one the plan is refused
/// before anything runs.
#[test]
fn a_port_step_without_a_port_needs_one_somewhere() {
    let s = setup("portless", OK, r#"{ wait = "port", timeout = "1m" }"#);
    // The whole file's check plans every computer and image a run could
    // pair, so it finds it too.
    for args in [&["check"][..], &["check", "pc7", "--image", "centos7"]] {
        let r = Test::with(&s).args(args).run();
        assert_eq!(r.code, 78, "{r:?}");
        assert!(
            r.stderr.contains(":12:12:") && r.stderr.contains("names no port"),
            "{}",
            r.stderr
        );
    }
    let r = Test::with(&s)
        .args(&["post-load", "pc7", "--image", "centos7"])
        .run();
    assert_eq!(r.code, 78, "{r:?}");
    let cfg = s.path("reimage.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace("node = \"pc7-bmc\"", "node = \"pc7-bmc\"\nport = 2222"),
    )
    .expect("write");
    let r = Test::with(&s)
        .args(&["check", "pc7", "--image", "centos7"])
        .run();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("1. port [port] port 2222: timeout 1m"),
        "{}",
        r.stdout
    );
}

#[test]
fn load_retry_then_success() {
    let s = setup(
        "retry",
        "#!/bin/sh\n[ \"$3\" = 1 ] && exit 75\nexit 0\n",
        "",
    );
    let r = Test::with(&s).provision("pc7", "centos7").run();
    r.code(0);
    let ev = r.events();
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
    // The port opens only once attempt 2's load has run: the test opens
    // it, standing in for the computer (a daemon of the load command
    // would end with the command, issue 21.2).
    let held = Port::new();
    let port = held.num();
    let load = format!(
        "#!/bin/sh\nif [ \"$3\" = 2 ]; then touch \"$(dirname \"$0\")/loaded-2\"; while ! python3 -c 'import socket; socket.create_connection((\"127.0.0.1\",{port}))' 2>/dev/null; do sleep 0.05; done; fi\nexit 0\n"
    );
    let s = setup(
        "postretry",
        &load,
        &format!("{{ wait = \"port\", port = {port}, timeout = \"1s\" }}"),
    );
    let loaded = s.path("loaded-2");
    let computer = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(120);
        while !loaded.exists() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        loaded.exists().then(|| held.listen())
    });
    let r = Test::with(&s).provision("pc7", "centos7").run();
    assert!(
        computer.join().expect("listener").is_some(),
        "attempt 2 never loaded"
    );
    r.code(0);
    let ev = r.events();
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
    let r = Test::with(&s).provision("pc7", "centos7").run();
    r.code(1);
    r.stderr_has("no such image");
    let ev = r.events();
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
    let r = Test::with(&s)
        .provision("pc7", "centos7")
        .args(&["--attempts", "2"])
        .run();
    r.code(1);
    r.stderr_has("attempts spent");
    assert_eq!(of_kind(&s.events("pc7"), "attempt").len(), 2);
    // A single step with a retry exits 75.
    let r = Test::with(&s).load("pc7", "centos7").run();
    r.code(75);
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
    let r = Test::with(&s2)
        .load("pc7", "centos7")
        .attempt(2, 3)
        .args(&["--reservation", "4711"])
        .run();
    r.code(0);
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
    // 1 s at attempt 1, 4 s at attempt 2 (growth 4): a 1.5 s load only
    // fits the second, with 2.5 s to spare for a loaded machine.
    let s = setup("grow", "#!/bin/sh\nsleep 1.5\nexit 0\n", "");
    let cfg = s.path("reimage.toml");
    let text = std::fs::read_to_string(&cfg).expect("cfg");
    std::fs::write(
        &cfg,
        text.replace("timeout = \"20s\"", "timeout = \"1s\"")
            .replace("max_attempts = 3", "max_attempts = 3\ntimeout_growth = 4.0"),
    )
    .expect("write");
    let r = Test::with(&s).load("pc7", "centos7").attempt(1, 3).run();
    r.code(75);
    r.stderr_has("ran past its timeout of 1s");
    let r = Test::with(&s).load("pc7", "centos7").attempt(2, 3).run();
    r.code(0);
    let r = Test::with(&s).check("pc7", "centos7").run();
    r.stdout_has("load timeout: 1s, 4s, 16s");
}

#[test]
fn wait_timeout_is_retry_then_fatal_on_the_last_attempt() {
    let held = Port::new();
    let port = held.num();
    let s = setup(
        "waitfatal",
        OK,
        &format!("{{ wait = \"port\", port = {port}, timeout = \"300ms\" }}"),
    );
    let r = Test::with(&s)
        .post_load("pc7", "centos7")
        .attempt(1, 3)
        .run();
    r.code(75);
    r.stderr_has("connection refused");
    let r = Test::with(&s)
        .post_load("pc7", "centos7")
        .attempt(3, 3)
        .run();
    r.code(1);
    r.stderr_has("no attempts left");
}

#[test]
fn stall_timeout_gives_up_before_the_timeout() {
    let held = Port::new();
    let port = held.num();
    let s = setup(
        "stall",
        OK,
        &format!(
            "{{ wait = \"port\", port = {port}, timeout = \"60s\", stall_timeout = \"700ms\" }}"
        ),
    );
    let r = Test::with(&s)
        .post_load("pc7", "centos7")
        .args(&["--of", "3"])
        .run();
    r.code(75);
    r.stderr_has("no change for 700ms");
    // Half the 60 s timeout: far more than a loaded machine adds to 700 ms.
    assert!(
        r.took < Duration::from_secs(30),
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
    let r = Test::with(&s).post_load("pc7", "centos7").run();
    r.code(0);
    let s = setup(
        "banner2",
        OK,
        &format!("{{ wait = \"banner\", port = {port}, regex = \"^HTTP\", timeout = \"500ms\" }}"),
    );
    let r = Test::with(&s)
        .post_load("pc7", "centos7")
        .args(&["--of", "2"])
        .run();
    r.code(75);
    r.stderr_has("does not match");
}

/// A server that answers every connection with a wrong banner, counting
/// them: each probe of a banner step is one connection.
fn counting_wrong_banner_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let n = std::sync::Arc::new(AtomicU32::new(0));
    let seen = std::sync::Arc::clone(&n);
    std::thread::spawn(move || {
        use std::io::Write;
        for mut c in l.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = c.write_all(b"HTTP/1.0 400 nope\r\n");
        }
    });
    (port, n)
}

#[test]
fn probe_interval_slows_the_probes_of_a_target_that_answers() {
    use std::sync::atomic::Ordering;
    // A 2 s banner step on a server that always sends the wrong banner:
    // the default (25 a second) asks it dozens of times, probe_interval =
    // "500ms" at most once per 500 ms (5 in 2 s: at 0, 0.5, 1, 1.5, 2 s).
    let probes = |interval: Option<&str>| {
        let (port, n) = counting_wrong_banner_server();
        let s = setup(
            "interval",
            OK,
            &format!("{{ wait = \"banner\", port = {port}, regex = \"^SSH-\", timeout = \"2s\" }}"),
        );
        if let Some(i) = interval {
            let cfg = s.path("reimage.toml");
            let text = std::fs::read_to_string(&cfg).expect("config");
            let text = text.replace(
                "channel = \"none\"\n",
                &format!("channel = \"none\"\nprobe_interval = \"{i}\"\n"),
            );
            std::fs::write(&cfg, text).expect("write config");
        }
        let r = Test::with(&s)
            .post_load("pc7", "centos7")
            .args(&["--of", "1"])
            .run();
        r.code(1);
        r.stderr_has("does not match");
        n.load(Ordering::SeqCst)
    };
    let slow = probes(Some("500ms"));
    assert!((1..=5).contains(&slow), "{slow} probes in 2 s at 500ms");
    // The default asks far more often: 51 at most in 2 s; even a loaded
    // machine makes more than the slow run's most.
    let fast = probes(None);
    assert!(fast > 5 && fast <= 51, "{fast} probes in 2 s at 40ms");
}

#[test]
fn a_second_run_on_a_locked_computer_exits_73() {
    // The first run holds the lock 30 s: a second run that waited for it
    // instead of answering at once would take that long.
    let s = setup("lock", "#!/bin/sh\nsleep 30\nexit 0\n", "");
    let mut first = Test::with(&s)
        .load("pc7", "centos7")
        .command()
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let lock = s.path("state/computers/pc7/lock");
    assert!(eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&lock).is_ok_and(|p| !p.is_empty())
    }));
    let r = Test::with(&s).load("pc7", "centos7").run();
    r.code(73);
    assert!(
        r.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        r.stderr
    );
    assert!(
        r.took < Duration::from_secs(15),
        "lock contention must answer at once, took {:?}",
        r.took
    );
    // SIGTERM, so reimage stops its load script too.
    kill_process(Pid::from_child(&first), Signal::TERM).expect("SIGTERM to reimage");
    common::wait_limit(&mut first, Duration::from_secs(30));
}

#[test]
fn power_off_is_refused_without_a_power_off_and_takes_the_lock_with_one() {
    let s = setup("off-lock", "#!/bin/sh\nsleep 30\nexit 0\n", "");
    // No power_off in the command provisioner: 64, before any lock or event.
    Test::with(&s)
        .power_off("pc7")
        .args(&["--image", "centos7"])
        .run()
        .code(64)
        .stderr_has("give it a power_off command");
    assert!(!s.path("state/computers/pc7/events.jsonl").exists());
    let off = s.script("off.sh", "#!/bin/sh\necho \"off $1\" >>\"$0.log\"\n");
    let cfg = std::fs::read_to_string(s.path("reimage.toml")).expect("config");
    std::fs::write(
        s.path("reimage.toml"),
        cfg.replace(
            "timeout = \"20s\"\n",
            &format!(
                "timeout = \"20s\"\npower_off = [\"{}\", \"{{node}}\"]\n",
                off.display()
            ),
        ),
    )
    .expect("config");
    // A load holds the computer: power-off answers 73 at once.
    let mut first = Test::with(&s)
        .load("pc7", "centos7")
        .command()
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let lock = s.path("state/computers/pc7/lock");
    assert!(eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&lock).is_ok_and(|p| !p.is_empty())
    }));
    Test::with(&s)
        .power_off("pc7")
        .args(&["--image", "centos7"])
        .run()
        .code(73);
    kill_process(Pid::from_child(&first), Signal::TERM).expect("SIGTERM to reimage");
    common::wait_limit(&mut first, Duration::from_secs(30));
    assert!(!s.path("off.sh.log").exists(), "no power-off while locked");
    // Free again: the command runs (the image from the last run's record),
    // and the record says power-off.
    let r = Test::with(&s).power_off("pc7").run();
    r.code(0).event_log_has("power off: running");
    assert_eq!(
        std::fs::read_to_string(s.path("off.sh.log")).expect("off.sh.log"),
        "off pc7-bmc\n"
    );
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("state/computers/pc7/last-run.json")).expect("record"),
    )
    .expect("record JSON");
    assert_eq!(
        (
            &rec["command"],
            &rec["image"],
            &rec["result"],
            &rec["exit_code"]
        ),
        (
            &"power-off".into(),
            &"centos7".into(),
            &"done".into(),
            &0.into()
        ),
        "{rec}"
    );
}

#[test]
fn sigterm_during_load_kills_the_child_and_frees_the_lock() {
    let s = Scratch::new("term-pid");
    let pidf = s.path("child.pid");
    let load = format!("#!/bin/sh\necho $$ > {}\nsleep 30 & wait\n", pidf.display());
    let t = setup("term", &load, "");
    let mut child = Test::with(&t)
        .provision("pc7", "centos7")
        .command()
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&pidf).is_ok_and(|p| !p.trim().is_empty())
    }));
    let script_pid: i32 = std::fs::read_to_string(&pidf)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid number");
    kill_process(Pid::from_child(&child), Signal::TERM).expect("SIGTERM to reimage");
    let code = common::wait_limit(&mut child, Duration::from_secs(30));
    assert_eq!(code, Some(143));
    assert!(
        eventually(Duration::from_secs(10), || !alive(script_pid)),
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
    let r = Test::with(&t).load("pc7", "centos7").run();
    r.code(0);
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
    let r = Test::with(&s)
        .args(&["--json"])
        .provision("pc7", "centos7")
        .args(&["--reservation", "77"])
        .run();
    drop(l);
    r.code(0);
    let ev: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is a JSON event"))
        .collect();
    assert!(
        ev.iter()
            .all(|e| e["computer"] == "pc7" && e["image"] == "centos7" && e["reservation"] == "77")
    );
    // The command load is a step of its own, named as its phase.
    let load = ev
        .iter()
        .find(|e| e["kind"] == "step-end" && e["phase"] == "load")
        .expect("the load's step-end event");
    assert_eq!(
        (&load["step"], &load["result"]),
        (&"load".into(), &"ok".into())
    );
    let step = ev
        .iter()
        .find(|e| e["kind"] == "step-end" && e["phase"] == "post-load")
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
    let held = Port::new();
    let port = held.num();
    let s = setup(
        "late",
        OK,
        &format!("{{ wait = \"port\", port = {port}, timeout = \"20s\" }}"),
    );
    // The port opens once reimage has reported it closed, however long the
    // run took to get there, and stays open until the run ends.
    let (r, opened, listener) = std::thread::scope(|scope| {
        let opener = scope.spawn(|| {
            let refused = eventually(Duration::from_secs(15), || {
                of_kind(&s.events_so_far("pc7"), "progress")
                    .iter()
                    .any(|e| e["step"] == "port")
            });
            let l = held.listen();
            (refused, std::time::Instant::now(), l)
        });
        let r = Test::with(&s).post_load("pc7", "centos7").run();
        let done = std::time::Instant::now();
        let (refused, opened, l) = opener.join().expect("opener");
        assert!(refused, "reimage never reported the closed port");
        (r, done.duration_since(opened), l)
    });
    drop(listener);
    r.code(0);
    // How soon is measured by the benchmark (examples/bench_ready.rs); the
    // bound here only tells "seen while polling" from "seen at the end of
    // the 20 s timeout or never", with room for a loaded machine.
    eprintln!("reimage exited {opened:?} after the port opened");
    assert!(
        opened < Duration::from_secs(10),
        "ready seen {opened:?} after the port opened"
    );
}

#[test]
fn a_terminal_gets_a_spinner_with_step_attempt_and_time_left() {
    // `script` gives reimage a pseudo-terminal for stderr.
    let held = Port::new();
    let port = held.num();
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
        std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            // A terminal type (CI may run with none: plain lines then).
            .env("TERM", "xterm"),
        LIMIT,
    );
    r.code(75);
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
    r.stdout_has("connection refused");
    // Without a terminal: plain lines only, no spinner.
    let r = Test::with(&s)
        .post_load("pc7", "centos7")
        .args(&["--of", "2"])
        .run();
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
    let r = Test::with(&s).post_load("pc7", "centos7").run();
    r.code(0);
    let ev = r.events();
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

/// A `command` provisioner whose load script answers `load_exit`, and a
/// generic OS that waits `1s` for a port nobody listens on.
fn contract(load_exit: i32, provisioner: &str) -> Test<'static> {
    let closed = port::closed();
    Test::new()
        .script("load.sh", &format!("#!/bin/sh\nexit {load_exit}\n"))
        .script("reset.sh", "#!/bin/sh\necho \"$1\" >> $DIR/resets\n")
        .config(&format!(
            r#"max_attempts = 3

[provisioners.script]
kind = "command"
load = ["$DIR/load.sh"]
power_reset = ["$DIR/reset.sh", "{{attempt}}"]
timeout = "10s"

[os.appliance]
family = "generic"
channel = "none"
steps = [{{ wait = "port", port = {closed}, timeout = "1s" }}]

[os.resettable]
family = "generic"
channel = "none"
steps = [{{ wait = "port", port = {closed}, timeout = "300ms", reset_on_timeout = "300ms" }}]

[images.img]
os = "appliance"
provisioner = "{provisioner}"
source = "img-src"

[images.reset]
os = "resettable"
provisioner = "{provisioner}"
source = "img-src"

[computers.pc7]
address = "127.0.0.1"
node = "pc7-bmc"
"#
        ))
}

#[test]
fn command_load_retry_on_the_last_attempt_is_fatal() {
    // The load script asks for a reload (exit 75); attempt 3 of 3 has none.
    contract(75, "script")
        .load("pc7", "img")
        .attempt(3, 3)
        .run()
        .code(1)
        .stderr_has("no attempts left");
    contract(75, "script")
        .load("pc7", "img")
        .attempt(1, 3)
        .run()
        .code(75)
        .stderr_lacks("no attempts left")
        .stdout_lacks("no attempts left");
}

#[test]
fn command_load_timeout_on_the_last_attempt_is_fatal() {
    // The issue's case: a load that times out on attempt 2 of 2.
    let t = Test::new()
        .script("load.sh", "#!/bin/sh\nsleep 30\n")
        .config(
            r#"[provisioners.script]
kind = "command"
load = ["$DIR/load.sh"]
timeout = "1s"

[os.appliance]
family = "generic"
channel = "none"
steps = []

[images.img]
os = "appliance"
provisioner = "script"

[computers.pc7]
address = "127.0.0.1"
"#,
        );
    t.load("pc7", "img")
        .attempt(2, 2)
        .run()
        .code(1)
        .stderr_has("no attempts left");
}

#[test]
fn command_post_load_timeout_on_the_last_attempt_is_fatal() {
    contract(0, "script")
        .post_load("pc7", "img")
        .attempt(3, 3)
        .run()
        .code(1)
        .stderr_has("no attempts left");
    contract(0, "script")
        .post_load("pc7", "img")
        .attempt(1, 3)
        .run()
        .code(75)
        .stderr_lacks("no attempts left");
}

// A `lab` computer has nothing to load, so its load cannot ask for a retry:
// only the post-load side of the last-attempt rule applies to it.
#[test]
fn lab_load_is_done_and_post_load_timeout_on_the_last_attempt_is_fatal() {
    contract(75, "lab")
        .load("pc7", "img")
        .attempt(3, 3)
        .run()
        .code(0);
    contract(0, "lab")
        .post_load("pc7", "img")
        .attempt(3, 3)
        .run()
        .code(1)
        .stderr_has("no attempts left");
    contract(0, "lab")
        .post_load("pc7", "img")
        .attempt(1, 3)
        .run()
        .code(75)
        .event_log_has("\"kind\":\"result\"");
}

#[test]
fn power_reset_script_sees_the_real_attempt() {
    let t = contract(0, "script");
    let resets = t.scratch().path("resets");
    let out = t.post_load("pc7", "reset").attempt(3, 3).run();
    out.code(1).stderr_has("no attempts left");
    let seen = std::fs::read_to_string(&resets).unwrap_or_default();
    assert_eq!(seen, "3\n", "the reset script's {{attempt}}");
}

#[test]
fn completions_need_no_config() {
    let out = Test::new()
        .no_config_flag()
        .env("REIMAGE_CONFIG", "/nonexistent/reimage.toml")
        .args(&["completions", "bash"])
        .run();
    // The script asks reimage at each TAB (term.rs tests what it answers).
    out.code(0)
        .stdout_has("-F _clap_complete_reimage reimage")
        .stdout_has("_REIMAGE_COMPLETE=\"bash\"");
    Test::new()
        .no_config_flag()
        .args(&["completions", "zsh"])
        .run()
        .code(0)
        .stdout_has("#compdef reimage");
    Test::new()
        .no_config_flag()
        .args(&["completions", "tcsh"])
        .run()
        .code(64)
        .stderr_has("invalid value 'tcsh'");
}

/// Issue 21: a reservation id reaches the load command's argv as
/// `{reservation}`; one that starts with '-' would be an option there, so
/// it is refused (64) before anything runs; with --json the refusal is a
/// `run` event, as every usage error is.
#[test]
fn a_reservation_that_looks_like_an_option_is_refused() {
    let s = setup(
        "reservation-dash",
        "#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/ran\"\nexit 0\n",
        "",
    );
    for id in ["--reservation=-x", "--reservation=--help"] {
        let r = Test::with(&s)
            .provision("pc7", "centos7")
            .args(&["--json", id])
            .run();
        r.code(64)
            .stderr_has("which a load command would take as an option");
        let ev: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("one JSON event");
        assert_eq!((&ev["kind"], &ev["code"]), (&"run".into(), &64.into()));
        assert!(!s.path("ran").exists(), "the load ran");
    }
    Test::with(&s)
        .provision("pc7", "centos7")
        .args(&["--reservation", "r-1"])
        .run()
        .code(0);
    let argv = std::fs::read_to_string(s.path("ran")).expect("ran");
    assert!(argv.contains(" r-1 "), "{argv}");
}

/// Issue 21: with --json, clap's own usage errors end with a `run` event
/// too, and `check` says what it found as one JSON object.
#[test]
fn usage_errors_and_check_speak_json_under_json() {
    let s = setup("json-usage", OK, "");
    for args in [
        vec!["--json", "load"],
        vec![
            "--json",
            "provision",
            "pc7",
            "--image",
            "centos7",
            "--bogus",
        ],
        vec!["--json", "log", "pc7", "--run", "0"],
    ] {
        let r = Test::with(&s).args(&args).run();
        r.code(64);
        let ev: serde_json::Value = serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("{args:?}: one JSON event: {e}; {r:?}"));
        assert_eq!((&ev["kind"], &ev["code"]), (&"run".into(), &64.into()));
        assert_eq!(ev["result"], "usage");
        assert!(ev["message"].as_str().is_some_and(|m| m.contains("error")));
    }
    // --help is no error: no event.
    let r = Test::with(&s).args(&["--json", "--help"]).run();
    r.code(0).stdout_lacks("\"kind\"");
    let r = Test::with(&s).args(&["--json", "check"]).run();
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("one JSON object");
    assert_eq!(
        (&v["kind"], &v["code"], &v["computers"]),
        (&"check".into(), &0.into(), &1.into())
    );
    let r = Test::with(&s)
        .args(&["--json"])
        .check("pc7", "centos7")
        .run();
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("one JSON object");
    assert_eq!(
        (&v["kind"], &v["computer"]),
        (&"check".into(), &"pc7".into())
    );
    let plan = v["plan"].as_array().expect("plan lines");
    assert!(
        plan.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("provisioner: script"))),
        "{v}"
    );
    assert!(v["reuse"].as_array().is_some_and(|r| !r.is_empty()), "{v}");
}

/// Issue 21: `status`, `log` and `check` whose output cannot be written
/// (a full disk) fail, naming why; a reader that stops reading (`| head`)
/// is no failure.
#[test]
fn views_fail_when_stdout_cannot_be_written() {
    let s = setup("stdout-full", OK, "");
    Test::with(&s).load("pc7", "centos7").run().code(0);
    for args in [
        vec!["status"],
        vec!["log", "pc7"],
        vec!["check"],
        vec!["--json", "status"],
    ] {
        let mut cmd = Test::with(&s).args(&args).command();
        cmd.stdout(std::fs::File::create("/dev/full").expect("/dev/full"));
        let out = cmd
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write to standard output"),
            "{args:?}: {stderr}"
        );
    }
    // A closed pipe: quiet, and 0.
    let mut cmd = Test::with(&s).args(&["log", "pc7"]).command();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
