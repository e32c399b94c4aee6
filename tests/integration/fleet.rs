//! Issue 24, items 3 and 4: the morning's view (`status` says why a run
//! failed, filters, exits 1 on a failure, local time, fits 100 columns;
//! `log --list`) and monitoring (the node_exporter textfile, parsed by
//! Prometheus' own Python parser; journald's native protocol and RFC 5424
//! syslog, read back from a datagram socket the test binds).

use crate::common::Scratch;
use crate::test::{Output, Test};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

/// Four computers and three images: `good` loads, `flaky` asks for a
/// retry every time, `broken` fails; `extra` is added to the config's top.
fn night(name: &str, extra: &str) -> Scratch {
    let s = Scratch::new(name);
    let flaky = s.script("flaky.sh", "#!/bin/sh\necho 'disk busy' >&2\nexit 75\n");
    let broken = s.script(
        "broken.sh",
        "#!/bin/sh\necho 'no such image on the depot' >&2\nexit 1\n",
    );
    s.config(&format!(
        r#"max_attempts = 2
{extra}

[provisioners.good]
kind = "command"
load = ["true"]

[provisioners.flaky]
kind = "command"
load = ["{flaky}"]

[provisioners.broken]
kind = "command"
load = ["{broken}"]
power_off = ["true"]

[os.none]
family = "generic"
channel = "none"
steps = []

[images.good]
os = "none"
provisioner = "good"
source = "x"

[images.flaky]
os = "none"
provisioner = "flaky"
source = "x"

[images.broken]
os = "none"
provisioner = "broken"
source = "x"

[computers.pc1]
address = "127.0.0.1"

[computers.pc2]
address = "127.0.0.1"

[computers.pc3]
address = "127.0.0.1"

[computers.pc4]
address = "127.0.0.1"
"#,
        flaky = flaky.display(),
        broken = broken.display()
    ));
    s
}

/// `provision COMPUTER --image IMAGE --reservation ID`, its exit code.
fn provision(s: &Scratch, computer: &str, image: &str, reservation: &str) -> Output {
    Test::with(s)
        .provision(computer, image)
        .args(&["--reservation", reservation])
        .run()
}

/// The line of the table that starts with `computer`.
#[track_caller]
fn row<'o>(out: &'o str, computer: &str) -> &'o str {
    out.lines()
        .find(|l| l.starts_with(&format!("{computer} ")))
        .unwrap_or_else(|| panic!("no row for {computer}:\n{out}"))
}

#[test]
fn status_says_why_runs_failed_filters_them_and_exits_1() {
    let s = night("fleet-status", "");
    provision(&s, "pc1", "good", "r1").code(0);
    provision(&s, "pc2", "flaky", "r2").code(1);
    provision(&s, "pc3", "broken", "r2").code(1);

    let r = Test::with(&s).args(&["status"]).run();
    r.code(1);
    for l in r.stdout.lines() {
        assert!(l.chars().count() <= 100, "wider than 100 columns: {l:?}");
    }
    assert!(r.stdout.starts_with("COMPUTER "), "{}", r.stdout);
    let pc2 = row(&r.stdout, "pc2");
    assert!(
        pc2.contains(" fatal ") && pc2.contains("disk busy"),
        "{pc2}"
    );
    let pc3 = row(&r.stdout, "pc3");
    assert!(pc3.contains("no such image on the depot"), "{pc3}");
    assert!(row(&r.stdout, "pc4").contains("never run"), "{}", r.stdout);
    assert!(row(&r.stdout, "pc1").contains(" done "), "{}", r.stdout);

    // --failed: those two only, still 1.
    let r = Test::with(&s).args(&["status", "--failed"]).run();
    r.code(1);
    let shown: Vec<&str> = r.stdout.lines().skip(1).collect();
    assert_eq!(shown.len(), 2, "{}", r.stdout);
    assert!(shown[0].starts_with("pc2 ") && shown[1].starts_with("pc3 "));
    // Nothing failed among what is shown: 0.
    let r = Test::with(&s).args(&["status", "--failed", "pc1"]).run();
    r.code(0).stdout_has("(no run matches)");
    let r = Test::with(&s).args(&["status", "pc1", "pc4"]).run();
    r.code(0);
    // --reservation and --since.
    let r = Test::with(&s)
        .args(&["status", "--reservation", "r1"])
        .run();
    r.code(0).stdout_has("pc1 ").stdout_lacks("pc2 ");
    let r = Test::with(&s).args(&["status", "--since", "1h"]).run();
    r.code(1)
        .stdout_has("pc1 ")
        .stdout_has("pc3 ")
        .stdout_lacks("pc4 ");
    let r = Test::with(&s)
        .args(&["status", "--since", "2999-01-01 00:00"])
        .run();
    r.code(0).stdout_lacks("pc1 ");
    Test::with(&s)
        .args(&["status", "--since", "someday"])
        .run()
        .code(64)
        .stderr_has("neither a duration");
    // -w: the whole reason and every column.
    let r = Test::with(&s).args(&["status", "-w", "--failed"]).run();
    r.code(1).stdout_has("RESERVATION").stdout_has("EXIT");
    assert!(
        row(&r.stdout, "pc2")
            .contains("no attempts left to load the image again (attempt 2 of 2: attempts spent)"),
        "{}",
        r.stdout
    );
    // --json: the lines as before, filtered, with the same exit code.
    let r = Test::with(&s).args(&["--json", "status", "--failed"]).run();
    r.code(1);
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert_eq!(lines[1]["computer"], "pc3");
    assert_eq!(lines[1]["record"]["result"], "fatal");
}

#[test]
fn status_shows_local_time_unless_told_utc() {
    let s = night("fleet-time", "");
    provision(&s, "pc1", "good", "r1").code(0);
    let r = Test::with(&s).args(&["--json", "status", "pc1"]).run();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    let updated = v["record"]["updated"]
        .as_str()
        .expect("updated")
        .to_string();
    let t = chrono::DateTime::parse_from_rfc3339(&updated).expect("RFC 3339");
    // Kathmandu is UTC+05:45 all year: no clock change, a minute offset.
    let nepal = chrono::FixedOffset::east_opt(5 * 3600 + 45 * 60).expect("offset");
    let want = t.with_timezone(&nepal);
    let r = Test::with(&s)
        .env("TZ", "Asia/Kathmandu")
        .args(&["status", "pc1", "-w"])
        .run();
    r.code(0)
        .stdout_has(&want.format("%Y-%m-%d %H:%M:%S+05:45").to_string());
    let r = Test::with(&s)
        .env("TZ", "Asia/Kathmandu")
        .args(&["status", "pc1"])
        .run();
    r.code(0)
        .stdout_has(&want.format("%Y-%m-%d %H:%M").to_string());
    let utc = t.with_timezone(&chrono::Utc);
    let r = Test::with(&s)
        .env("TZ", "Asia/Kathmandu")
        .args(&["status", "pc1", "--utc"])
        .run();
    r.code(0)
        .stdout_has(&utc.format("%Y-%m-%d %H:%MZ").to_string());
    // A --since time is local too: a quarter to the hour in Kathmandu is
    // on the hour in UTC.
    let since = (want - chrono::Duration::minutes(1)).format("%Y-%m-%d %H:%M:%S");
    Test::with(&s)
        .env("TZ", "Asia/Kathmandu")
        .args(&["status", "--since", &since.to_string()])
        .run()
        .code(0)
        .stdout_has("pc1 ");
}

#[test]
fn a_user_who_may_not_read_the_state_dir_is_told_so() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let s = night("fleet-noperm", "");
    provision(&s, "pc1", "good", "r1").code(0);
    std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = s.path("reimage.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for args in [&["status"][..], &["log", "pc1"]] {
        let mut cmd = Test::with(&s).args(args).command();
        cmd.uid(65534).gid(65534);
        let r = crate::test::run(&mut cmd, crate::common::LIMIT);
        r.code(77)
            .stderr_has("may not read the state directory")
            .stdout_lacks("never run");
    }
}

#[test]
fn log_list_shows_each_run_with_its_result() {
    let s = night("fleet-loglist", "");
    provision(&s, "pc3", "broken", "r7").code(1);
    provision(&s, "pc3", "good", "r8").code(0);
    let r = Test::with(&s).args(&["log", "pc3", "--list"]).run();
    r.code(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(lines[0].starts_with("RUN "), "{}", r.stdout);
    assert!(
        lines[1].starts_with("1 ")
            && lines[1].contains("provision")
            && lines[1].contains("r7")
            && lines[1].contains("fatal")
            && lines[1].contains("on the depot"),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].starts_with("2 ") && lines[2].contains("done") && lines[2].contains("r8"),
        "{}",
        r.stdout
    );
    let r = Test::with(&s)
        .args(&["--json", "log", "pc3", "--list"])
        .run();
    let runs: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0]["code"].as_i64(), runs[1]["code"].as_i64()),
        (Some(1), Some(0))
    );
}

/// The samples of the textfile, as Prometheus' own parser reads it
/// (python3-prometheus-client, Debian's): `[name, labels, value]`.
fn samples(path: &std::path::Path) -> Vec<(String, serde_json::Value, f64)> {
    let script = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for f in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    // Debian's python3, which has Debian's prometheus_client.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the parser refused the textfile: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    let v: Vec<(String, serde_json::Value, f64)> =
        serde_json::from_slice(&out.stdout).expect("parser output");
    v
}

/// The value of `name` for `computer` (and `extra` labels).
#[track_caller]
fn value(
    all: &[(String, serde_json::Value, f64)],
    name: &str,
    computer: &str,
    extra: &[(&str, &str)],
) -> Option<f64> {
    all.iter()
        .find(|(n, l, _)| {
            n == name && l["computer"] == computer && extra.iter().all(|(k, v)| l[*k] == *v)
        })
        .map(|s| s.2)
}

#[test]
fn the_metrics_textfile_parses_after_success_retry_and_fatal_runs() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("fleet-metrics-paths");
    let prom = s.path("textfile/reimage.prom");
    let s = night(
        "fleet-metrics",
        &format!("\n[metrics]\ntextfile = \"{}\"\n", prom.display()),
    );
    provision(&s, "pc1", "good", "r1").code(0);
    let all = samples(&prom);
    let result =
        |all: &[_], c: &str, r: &str| value(all, "reimage_last_run_result", c, &[("result", r)]);
    assert_eq!(result(&all, "pc1", "done"), Some(1.0));
    assert_eq!(result(&all, "pc1", "fatal"), Some(0.0));
    assert_eq!(
        value(&all, "reimage_last_run_exit_code", "pc1", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&all, "reimage_last_run_attempts", "pc1", &[]),
        Some(1.0)
    );
    for phase in ["load", "post-load"] {
        assert!(
            value(
                &all,
                "reimage_last_run_phase_duration_seconds",
                "pc1",
                &[("phase", phase)]
            )
            .is_some_and(|v| v >= 0.0),
            "{phase}: {all:?}"
        );
    }
    let success =
        value(&all, "reimage_last_success_timestamp_seconds", "pc1", &[]).expect("a last success");
    assert_eq!(
        std::fs::metadata(&prom)
            .expect("textfile")
            .permissions()
            .mode()
            & 0o777,
        0o644,
        "node_exporter runs as another user"
    );

    // A single load that asks for a retry (75), then the computer fails
    // for good: its last success stays.
    Test::with(&s)
        .load("pc1", "flaky")
        .attempt(1, 2)
        .run()
        .code(75);
    let all = samples(&prom);
    assert_eq!(result(&all, "pc1", "retry"), Some(1.0));
    assert_eq!(result(&all, "pc1", "done"), Some(0.0));
    assert_eq!(
        value(&all, "reimage_last_run_exit_code", "pc1", &[]),
        Some(75.0)
    );
    provision(&s, "pc2", "flaky", "r2").code(1);
    provision(&s, "pc1", "broken", "r3").code(1);
    let all = samples(&prom);
    assert_eq!(result(&all, "pc1", "fatal"), Some(1.0));
    assert_eq!(result(&all, "pc2", "fatal"), Some(1.0));
    assert_eq!(
        value(&all, "reimage_last_run_attempts", "pc2", &[]),
        Some(2.0)
    );
    assert_eq!(
        value(&all, "reimage_last_run_max_attempts", "pc2", &[]),
        Some(2.0)
    );
    assert_eq!(
        value(&all, "reimage_last_success_timestamp_seconds", "pc1", &[]),
        Some(success)
    );
    assert_eq!(
        value(&all, "reimage_last_success_timestamp_seconds", "pc2", &[]),
        None
    );
    // A power-off afterwards (a scheduler's power saving) leaves the
    // failed load showing.
    Test::with(&s).power_off("pc1").run().code(0);
    assert_eq!(result(&samples(&prom), "pc1", "fatal"), Some(1.0));
    // No temp file is left beside it for the collector to read.
    let names: Vec<String> = std::fs::read_dir(prom.parent().expect("dir"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["reimage.prom"]);
}

/// A datagram socket the test binds, read while `run` runs (the kernel
/// queues only a few datagrams for a reader that does not read).
fn listen(path: &std::path::Path, run: impl FnOnce()) -> Vec<Vec<u8>> {
    let sock = UnixDatagram::bind(path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => got.push(buf[..n].to_vec()),
                    Err(_) if stop.load(std::sync::atomic::Ordering::SeqCst) => return got,
                    Err(_) => {}
                }
            }
        })
    };
    run();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().expect("reader")
}

/// A native-protocol datagram's fields.
fn fields(d: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = d;
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').expect("a line");
        let line = &rest[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            rest = &rest[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().expect("length"));
            let start = nl + 9;
            let end = start + len as usize;
            out.insert(
                name,
                String::from_utf8_lossy(&rest[start..end]).into_owned(),
            );
            assert_eq!(rest[end], b'\n');
            rest = &rest[end + 1..];
        }
    }
    out
}

#[test]
fn events_reach_journald_and_syslog_with_their_fields() {
    let sock = Scratch::new("fleet-journal-socket");
    let path = sock.path("journal.sock");
    let s = night(
        "fleet-journal",
        &format!(
            "\n[logs]\njournald = true\nsocket = \"{}\"\n",
            path.display()
        ),
    );
    let got = listen(&path, || {
        provision(&s, "pc3", "broken", "r42").code(1);
    });
    let events: Vec<_> = got.iter().map(|d| fields(d)).collect();
    let result = events
        .iter()
        .find(|f| f.get("REIMAGE_KIND").map(String::as_str) == Some("result"))
        .unwrap_or_else(|| panic!("no result event: {events:?}"));
    assert_eq!(result["COMPUTER"], "pc3");
    assert_eq!(result["IMAGE"], "broken");
    assert_eq!(result["PHASE"], "load");
    assert_eq!(result["RESULT"], "fatal");
    assert_eq!(result["RESERVATION"], "r42");
    assert_eq!(result["PRIORITY"], "3");
    assert_eq!(result["SYSLOG_IDENTIFIER"], "reimage");
    let end = events
        .iter()
        .find(|f| f.get("REIMAGE_KIND").map(String::as_str) == Some("run"))
        .expect("the run event");
    assert_eq!(end["EXIT_CODE"], "1");
    assert!(
        end["MESSAGE"].contains("no such image on the depot"),
        "{end:?}"
    );
    assert!(events.iter().any(|f| f["REIMAGE_KIND"] == "start"));
    std::fs::remove_file(&path).expect("unbind");

    // syslog: RFC 5424, the same fields as structured data.
    let text = std::fs::read_to_string(s.path("reimage.toml")).expect("config");
    s.write(
        "reimage.toml",
        &text.replace("journald = true", "syslog = true"),
    );
    let got = listen(&path, || {
        provision(&s, "pc1", "good", "r43").code(0);
    });
    let lines: Vec<String> = got
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    let done = lines
        .iter()
        .find(|l| l.contains(" run [reimage@32473 "))
        .unwrap_or_else(|| panic!("no run event: {lines:?}"));
    // daemon.notice: <29>, version 1.
    assert!(done.starts_with("<29>1 "), "{done}");
    for f in [
        r#"computer="pc1""#,
        r#"image="good""#,
        r#"reservation="r43""#,
        r#"result="done""#,
        r#"exit_code="0""#,
    ] {
        assert!(done.contains(f), "{f} in {done}");
    }
    // Nobody listens: the run says so once, and still succeeds.
    std::fs::remove_file(&path).expect("unbind");
    Test::with(&s)
        .provision("pc1", "good")
        .run()
        .code(0)
        .stderr_has("cannot send events to");
}
